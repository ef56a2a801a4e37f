r"""Accurate elementwise primitives for the stable KL forms, written against the array API.

Every function here takes arrays of any supported framework (or Python scalars), works in
the input's floating dtype, and returns an array of the input's namespace, dtype and device.
"""

from __future__ import annotations

import decimal
import struct
from decimal import Decimal
from typing import Any

from . import _namespace

__all__ = ["expm1mx"]

# On |w| <= 1/4:  (e**w - 1 - w) / 2 = h + h * w * S(w),  h = w**2 / 4,  where
# S(w) = 1/3 + w/12 + ... is a Chebyshev fit of the lowest degree whose approximation error
# is a small fraction of a unit of roundoff, for the value and for its autodiff derivative
# against expm1 (degree 4 for float32, 9 for float64; tools/fit_expm1mx.py makes and checks
# them).  The leading 1 of (1 + w S) is exact and |w S(w)| <= 0.09 on the interval.
_S_FLOAT32 = (
    0.3333333333333333, 0.08333327272999677, 0.016666659934025302, 0.00278165571813306,
    0.00039725622467968324,
)  # fmt: skip
_S_FLOAT64 = (
    0.3333333333333333, 0.08333333333333333, 0.016666666666666188, 0.0027777777777777436,
    0.00039682539688670054, 4.960317460755305e-05, 5.511461098580778e-06,
    5.511461883370408e-07, 5.01544255611659e-08, 4.178937522914029e-09,
)  # fmt: skip

# The table points a = q/4 (q an integer) and their ends: from where e**a is below the
# dtype's resolution of -1 - a (e**-24 < 2**-34, e**-44 < 2**-63) up to the largest a for
# which weight * e**a is finite (e**88.5 < 2**128 <= e**88.75, e**709.75 < 2**1024).
_STEPS = 4
_FIRST = {False: -24 * _STEPS, True: -44 * _STEPS}
_LAST = {
    (False, 1.0): 354, (False, 0.5): 357,  # a = 88.5, 89.25
    (True, 1.0): 2839, (True, 0.5): 2841,  # a = 709.75, 710.25
}  # fmt: skip


def _to_dtype(value: Decimal, is_float64: bool) -> float:
    """``value`` rounded to a float of the dtype (float32: via float64; the double rounding
    can move a constant by at most 2**-29 of its ulp)."""
    x = float(value)
    return x if is_float64 else struct.unpack("f", struct.pack("f", x))[0]


def _exp_tables() -> dict[tuple[bool, float], tuple[tuple[float, ...], tuple[float, ...]]]:
    """``weight (e**a - 1)`` and ``weight (e**a - 1 - a)``, rounded to the dtype, for the
    table points ``a`` of each dtype (key ``is_float64``) and weight (1 or 1/2).

    Computed in ``decimal`` with 60 digits (each entry from its neighbour by one product, so
    with an error near ``1e-56``), once at import (about 15 ms): ``torch.compile`` cannot
    trace a cache that fills on first use.
    """
    with decimal.localcontext() as context:
        context.prec = 60
        step = (Decimal(1) / _STEPS).exp()
        powers = {0: Decimal(1)}
        for q in range(1, max(_LAST.values()) + 1):
            powers[q] = powers[q - 1] * step
        for q in range(-1, min(_FIRST.values()) - 1, -1):
            powers[q] = powers[q + 1] / step
        tables = {}
        for (is_float64, weight), last in _LAST.items():
            points = range(_FIRST[is_float64], last + 1)
            w = Decimal(weight)
            tables[is_float64, weight] = (
                tuple(_to_dtype(w * (powers[q] - 1), is_float64) for q in points),
                tuple(_to_dtype(w * (powers[q] - 1 - Decimal(q) / _STEPS), is_float64)
                      for q in points),
            )  # fmt: skip
        return tables


_EXP_TABLES = _exp_tables()


def mask(condition: Any, dtype: Any, xp: Any) -> Any:
    """``condition`` as 0.0/1.0 of ``dtype``: selects by arithmetic, ``m*a + (1-m)*b``.

    On eager CPU backends this is several times cheaper than ``where`` (measured 2.6 ms
    against 0.25 ms for 10**6 float32 in NumPy); gradients flow as through ``where``, and
    both ``a`` and ``b`` must be finite wherever they are not selected.  PyTorch converts
    ``bool`` to floating point slowly and ``uint8`` fast (measured 24 us against 3 + 6 us for
    2**17 elements on the CPU), so there the mask goes through ``uint8``.
    """
    if _namespace.converts_bool_slowly(xp):
        condition = xp.astype(condition, xp.uint8)
    return xp.astype(condition, dtype)


def bounded_quotient(numerator: Any, denominator: Any, low: Any, high: Any, xp: Any) -> Any:
    """``numerator / denominator`` clipped to ``[low, high]``, for a quotient used several times.

    XLA on CPU does not fuse a division whose result has several uses: it writes the quotient
    to memory, and a kernel with a few such quotients runs as a dozen passes instead of one
    (measured 3x slower under ``jax.jit`` for the Normal KL).  It fuses a ``clip`` of the
    quotient freely.  Callers pass bounds that hold wherever the quotient is used (an infinite
    quotient may become the largest float where it is only squared), so the clip changes no
    value that reaches the result; elsewhere it costs one cheap operation.
    """
    return _namespace.clip(numerator / denominator, low, high, xp)


def fusable_clip(x: Any, low: float, high: float, xp: Any) -> Any:
    """``x`` clipped to ``[low, high]`` under XLA only, for a value that lies there anyway.

    XLA on CPU does not fuse an expensive operation (a division, ``pow``) whose result has
    several uses into their loops (see :func:`bounded_quotient`); a clip of it is cheap to
    duplicate, and fuses.  The clip changes no value, and on the other backends it would be
    one more pass over memory, so there ``x`` is returned as it is.
    """
    if _namespace.compiles_with_xla(xp):
        return _namespace.clip(x, low, high, xp)
    return x


def _series(clipped: Any, xp: Any) -> Any:
    """``e**w - 1 - w`` for ``|w| <= 1/4``, from ``clipped = clip(w, -1/2, 1/2)``.

    ``h + h*w*S(w)`` with ``h = w**2/2``: the second term is at most 0.09 of the first.
    Callers pass a clipped argument so that the value is finite where it is not used
    (gradients included); clipping wider than the interval keeps the gradient exact at its
    ends, where a clip to them would tie.
    """
    coefficients = _S_FLOAT64 if clipped.dtype == xp.float64 else _S_FLOAT32
    correction = coefficients[-1] * clipped + coefficients[-2]
    for c in coefficients[-3::-1]:
        correction = correction * clipped + c
    h = (0.5 * clipped) * clipped
    return h + h * (clipped * correction)


def _scaled_expm1mx(x: Any, weight: float, xp: Any) -> Any:
    r"""``weight * (e**x - 1 - x)``, ``weight`` 1/2 or 1, for an array ``x`` of namespace ``xp``.

    With ``a`` the multiple of 1/4 next to ``x`` towards 0 (``a = trunc(4x)/4``, clipped to
    the table), ``w = x - a`` (exact: ``|w| < 1/4``, and ``x`` and ``a`` are within a factor
    2 of each other where ``a != 0``), ``s = e**w - 1 - w`` and ``K = e**a - 1``:

    .. math::

        e^x - 1 - x = K w + (K s + s) + D, \qquad D = e^a - 1 - a,

    since ``e**x = e**a (1 + w + s)``.  ``K`` and ``D`` (times ``weight``) come from tables
    (``take``), ``s`` from the series of :func:`_series`.  Every term is
    non-negative: ``w`` has the sign of ``a`` and so of ``K``, ``D >= 0``, ``s >= 0``, and
    ``K s + s = e**a s``; ``K = D = 0`` for ``|x| < 1/4`` (``a = 0``), which leaves ``s``
    alone.  So the result is never negative, rounded a few times without cancellation, and
    no backend ``exp`` or ``expm1`` enters it (NumPy's float32 ``exp`` is up to 2.5 ulp
    off; ``torch.compile`` lowers ``expm1`` to ``exp(x) - 1``).  The autodiff derivative,
    ``K + e**a s'(w)`` with ``s' = expm1(w)`` of the sign of ``K``, is a sum of terms of one
    sign as well.

    Beyond the table, ``w`` is large and the series is evaluated at ``w`` clipped to
    ``[-1/2, 1/2]``, so that it stays finite: below it (``x < -24`` in float32, ``-44`` in
    float64) ``K = -1`` and the result is ``-w + D = -1 - x`` (``e**x`` is below the
    resolution); above it (``x >= 88.75`` in float32, ``710`` in float64; ``89.5`` and
    ``710.5`` for the half) the true value overflows and so does ``K w``, which has ``w``
    unclipped; ``+inf`` and ``-inf`` give ``+inf`` (``K w`` is ``+inf``), NaN gives NaN (the
    index of a NaN, some integer, is clipped into the table; ``w`` is NaN).  No intermediate
    overflows where the result does not: every term is at most the result.

    The two weights give the same roundings (the tables and the scalings are exact) except
    at the ends of the float range: the KL uses the half itself, and :func:`expm1mx` the
    whole, which has no subnormal half to be flushed on JAX and CuPy.

    Measured (``tools/exhaustive_expm1mx.py``, every float32 input): at most 1.55 ulp on
    NumPy, PyTorch and JAX, 1.52 under ``jax.jit``; float64 sweeps against mpmath, 1.53.
    """
    dtype = x.dtype
    is_float64 = dtype == xp.float64
    first, last = _FIRST[is_float64], _LAST[is_float64, weight]
    quarters = _namespace.clip(xp.trunc(x * float(_STEPS)), float(first), float(last), xp)
    w = x - quarters * (1.0 / _STEPS)  # exact wherever x is within the table
    index = _namespace.clip(xp.astype(quarters, xp.int32) - first, 0, last - first, xp)
    k_values, d_values = _EXP_TABLES[is_float64, weight]
    k = _namespace.take(k_values, index, dtype, xp)
    d = _namespace.take(d_values, index, dtype, xp)
    whole = _series(_namespace.clip(w, -0.5, 0.5, xp), xp)  # e**w - 1 - w
    # weight * whole, exact: a half computed as such, not doubled, so that no intermediate
    # of the gradient (twice K times the incoming gradient) overflows where it does not
    series = whole if weight == 1.0 else weight * whole
    return (k * w + (k * whole + series)) + d


def half_expm1mx(x: Any, xp: Any) -> Any:
    """``(e**x - 1 - x) / 2`` for an array ``x`` of namespace ``xp``; the KL's workhorse
    (see :func:`_scaled_expm1mx`)."""
    return _scaled_expm1mx(x, 0.5, xp)


def expm1mx(x: Any) -> Any:
    r"""Compute ``e**x - 1 - x`` accurately and never negative.

    Parameters
    ----------
    x : array or float
        Real floating array of any supported framework, or a Python scalar (computed as a
        NumPy float64 array).

    Returns
    -------
    array
        ``e**x - 1 - x``, of the namespace, dtype, shape and device of ``x``.

    Notes
    -----
    ``e**x - 1 - x`` is the convex function that measures how far ``e**x`` lies above its
    tangent at 0; it is the building block of every stable KL form in this library
    (for example ``KL(N(a, s) || N(b, t)) = expm1mx(2 log(s/t))/2 + ((a-b)/t)**2/2``).
    Written as ``expm1(x) - x`` it loses all precision near 0 (both terms are about ``x``,
    the result about ``x**2/2``).  Here, with ``a = trunc(4x)/4`` (the multiple of 1/4 next
    to ``x`` towards 0) and ``w = x - a`` (exact, ``|w| < 1/4``),

    .. math::

        e^x - 1 - x = (e^a - 1)\,w + e^a\,s(w) + (e^a - 1 - a), \qquad s(w) = e^w - 1 - w,

    with ``e**a - 1`` and ``e**a - 1 - a`` from tables made at import (60-digit ``decimal``,
    rounded once to the dtype) and ``s(w) = w**2/2 * (1 + w S(w))``, ``S`` a polynomial fitted
    on ``[-1/4, 1/4]`` (degree 4 in float32, 9 in float64).  The three terms are never
    negative (``w`` has the sign of ``a``), so nothing cancels, and no backend ``exp`` enters
    (NumPy's float32 ``exp`` is up to 2.5 ulp off).  For ``|x| < 1/4`` only ``s(x)`` is left.
    Beyond the tables the value is ``-1 - x`` (``x < -24`` in float32, ``-44`` in float64;
    ``e**x`` is below the resolution) or overflows; no intermediate overflows first.

    The result is within 2.5 ulp of the exact value (measured: 1.55 ulp for every float32
    input on NumPy, PyTorch and JAX, ``jax.jit`` included, and 1.53 on float64 sweeps) and
    ``>= 0`` for every input; ``inf`` for ``x = ±inf``; NaN for NaN.  Its gradient is within a
    few ulp of ``expm1(x)``, and finite wherever the value is.

    Examples
    --------
    >>> import numpy as np
    >>> from kullback.special import expm1mx
    >>> float(expm1mx(np.float64(1e-10)))  # expm1(x) - x would give 0 or a wrong value
    5.000000000166667e-21
    >>> float(expm1mx(-np.inf))
    inf
    """
    resolved = _namespace.resolve([("x", x)])
    xp = resolved.xp
    with _namespace.errstate(xp):
        result = _scaled_expm1mx(resolved.asarray(x), 1.0, xp)
        return _namespace.finalize(resolved.result(result), xp)
