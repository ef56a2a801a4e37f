r"""KL divergence between two Normal distributions.

Derivation
----------
For ``p = N(a, s**2)`` and ``q = N(b, t**2)``,

.. math::

    KL(p \| q) = \log\frac{t}{s} + \frac{s^2 + (a-b)^2}{2 t^2} - \frac12
               = \tfrac12\,\mathrm{expm1mx}(2r) + \tfrac12 d^2,

with ``r = log(s/t)``, ``d = (a - b)/t`` and ``expm1mx(x) = e**x - 1 - x``.  Both terms are
``>= 0`` in exact arithmetic and, as computed, in floating point: the closed form's
``var_ratio - 1 - log(var_ratio)`` cancels catastrophically as ``s -> t`` and is what makes
the usual implementations return negative values.

To first order the relative error of the result is twice that of ``r`` and of ``d``, so
both are computed to about one unit of roundoff, whatever the backend's ``log1p``, ``log``
and ``expm1`` do (some are several ulp off; none is relied on for small arguments):

* ``scale`` vs ``scale``: see :func:`_variance_term_from_scales`.  For ``1/2 <= s/t <= 4``
  the variance term comes from the exact ``s - t`` (or ``s - 2t``) through a short
  polynomial in ``u = (s - t)/(s + t)``, with no transcendental function; beyond, from
  ``s/t`` and one ``log``.  This case does not go through ``r``.
* ``log_scale`` vs ``log_scale``: ``r = log_s - log_t``, exact when close.  When the
  log-scales differ a lot their difference is rounded, and ``e**(2r)`` amplifies that
  rounding by ``2|r|``: the problem itself is that ill-conditioned in the log-scales.
* mixed: ``r = log(s) - log_t`` (or ``log_s - log(t)``) with
  :func:`~kullback._double_word.log_difference`, which carries ``log(s)`` in three words
  and cancels it against the log-scale exactly: about one unit of roundoff in ``r``
  however small it is, where a rounded ``log(s)`` would be amplified by ``|log s| / |r|``.
* ``d**2/2``: see :func:`_location_term`.

Special values: NaN in, NaN out; a negative or infinite scale (outside the domain) gives
NaN; a zero scale gives ``+inf`` (two zero scales, or equal locations with ``scale_q = 0``,
are NaN); ``log_scale = +inf`` gives ``+inf``.

Quotients used more than once go through :func:`~kullback.special.bounded_quotient`, so that
XLA fuses the kernel into one pass.
"""

from __future__ import annotations

import math
from typing import Any

from .. import _namespace
from .._atanh import Q_FLOAT32 as _Q_FLOAT32
from .._atanh import Q_FLOAT64 as _Q_FLOAT64
from .._double_word import (
    log_difference,
    log_words,
    log_words_of_number,
    smaller_than_result,
    subtract_from_words,
)
from .._registry import python_number, register_kl, shared_across_slices
from ..distributions import Normal
from ..special import bounded_quotient, fusable_clip, half_expm1mx, mask

__all__: list[str] = []

# The variance term at a scale ratio of 2, 3/2 - log 2; and 1/2 - log 2, of the far form.
_AT_TWO = 1.5 - math.log(2.0)
_HALF_MINUS_LOG_TWO = 0.5 - math.log(2.0)


def _variance_term_from_scales(scale_p: Any, scale_q: Any, xp: Any) -> Any:
    r"""``V = (rho**2 - 1)/2 - log(rho)``, ``rho = s/t``, from two scales ``s``, ``t``.

    For ``1/2 <= rho <= 4`` the series of :func:`_near_equality_term`, which needs no
    transcendental function; elsewhere :func:`_far_apart_term`, with one ``log``.  The two
    are selected by 0/1 masks where ``u**2 < 1/9`` (``u`` from the series).  Where the
    difference behind ``u`` may be inexact (just outside a window) the computed ``u**2`` is
    at least the rounded ``1/9``: at the window edges ``e = -1/2`` and ``e = 1`` it rounds
    to ``fl(1/9)`` (float64) or above (float32), and rounding is monotonic.  Both terms are
    evaluated on bounded values, so each is finite where it is not selected, gradients
    included.

    Outside the domain a negative ``scale_q`` (``0/0``) or an infinite scale
    (``0 * inf``) adds NaN; a negative ``scale_p`` gives ``|u| > 1`` and the ``log`` of a
    negative ratio.  (The NaN must not depend on an unselected term: XLA may turn a product
    with a 0/1 mask into a selection.)
    """
    dtype = scale_p.dtype
    series, u_squared = _near_equality_term(scale_p, scale_q, xp)
    near = mask(u_squared < 1 / 9, dtype, xp)
    far = _far_apart_term(scale_p, scale_q, xp)
    domain = (0.0 * scale_p + 0.0 * scale_q) / mask(scale_q >= 0, dtype, xp)
    return near * series + (1 - near) * far + domain


def _near_equality_term(scale_p: Any, scale_q: Any, xp: Any) -> tuple[Any, Any]:
    r"""The variance term for ``1/2 <= rho <= 4``, and ``u**2``, which says where it holds.

    About ``rho0 = 1`` (``s < 2t``) or ``2`` (``s >= 2t``), with ``t' = 2t`` where
    ``rho0 = 2`` (an exact doubling), the difference ``d = s - t'`` is exact (Sterbenz) for
    ``rho0/2 <= rho <= 2 rho0``.  With ``e = d/t' = rho/rho0 - 1`` and ``u = e/(2 + e)``,
    so that ``log(1 + e) = 2 atanh(u)``,

    .. math::

        V(\rho_0 (1 + e)) = e^2 G(u) + V(\rho_0) + \kappa\, e\,(1 + e/2),
        \qquad G(u) = 1 - u\left(\tfrac12 + (1-u)^2 Q(u^2)\right),
        \qquad \kappa = \rho_0^2 - 1,

    with the polynomial ``Q`` of ``_Q_FLOAT32``/``_Q_FLOAT64`` and ``0.80 <= G <= 1.28``
    for ``|u| <= 1/3``.  For ``rho0 = 1`` that is a square times a factor near 1, with no
    ``log`` (backends' ``log`` and ``log1p`` are up to 3.8 ulp off near 1); for ``rho0 = 2``
    (``e >= 0``) a sum of non-negative terms, with ``V(2) = 3/2 - log 2`` rounded once.
    ``e`` is bounded to ``[-1, 2]`` (it lies in ``[-1/2, 1]`` wherever the term is used),
    so the term stays finite for ``scale_q = 0``.  Below ``rho = 1/2`` the far form is as
    accurate (see :func:`_far_apart_term`), so no third window is needed.

    Backends that flush subnormal results to zero (XLA, CuPy) first multiply scales below
    ``2**(digits + 2)`` times the smallest normal (``2**26`` in float32, ``2**55`` in float64)
    by ``2**(maxexp/2)``, exactly, so that ``d`` is
    never subnormal; elsewhere a subnormal ``d`` is exact (and ``e`` normal), so the lift
    is skipped.
    """
    dtype = scale_p.dtype
    doubled = mask(scale_p >= scale_q + scale_q, dtype, xp)
    if _namespace.flushes_subnormals(xp):
        finfo = xp.finfo(dtype)
        # below 2**(digits + 2) times the smallest normal, s - 2t or s - t may be subnormal
        threshold = float(finfo.smallest_normal) / float(finfo.eps) * 8.0
        small = mask(scale_q < threshold, dtype, xp)
        lift = 1.0 + small * (2.0 ** (math.frexp(float(finfo.max))[1] // 2) - 1.0)
        scale_p = scale_p * lift
        scale_q = scale_q * lift
    base = scale_q + doubled * scale_q  # t or 2t
    difference = scale_p - base
    excess = bounded_quotient(difference, base, -1.0, 2.0, xp)
    u = fusable_clip(excess / (2.0 + excess), -1.0, 1.0, xp)  # |u| <= 1 for valid scales
    w = u * u
    coefficients = _Q_FLOAT64 if dtype == xp.float64 else _Q_FLOAT32
    q = coefficients[-1] * w + coefficients[-2]
    for c in coefficients[-3::-1]:
        q = q * w + c
    one_minus_u = 1.0 - u
    g = 1.0 - u * (0.5 + (one_minus_u * one_minus_u) * q)
    slope = 3.0 * doubled  # kappa = rho0**2 - 1: dV/de at e = 0
    return excess * (excess * (g + 1.5 * doubled) + slope) + doubled * _AT_TWO, w


def _far_apart_term(scale_p: Any, scale_q: Any, xp: Any) -> Any:
    """The variance term ``(rho/2) rho - (log(2 rho) + (1/2 - log 2))``, used outside
    ``[1/2, 4]``.

    For ``rho < 1/2`` a sum of non-negative terms.  ``log`` is taken of ``2 rho``, which is
    at most 1 there: its absolute error is then at most 1.5 units of ``2**-24`` in float32
    (NumPy, measured over every float in ``[1/2, 1]``; 0.7 for PyTorch and JAX), against
    twice that for ``log(rho)``, and it enters at most 2 times (at ``rho = 1/2``).  Measured
    over every float32 ``rho`` in ``[1/4, 1/2]``: at most 2.5 ulp (NumPy), 1.7 (JAX), 1.5
    (PyTorch).  For ``rho > 4`` the terms cancel by at most a factor 1.3, and ``log``
    enters at most 0.23 times.

    Below ``2**(4 - maxexp)`` the quotient ``s/t`` would lose bits to underflow (or be
    flushed to 0), although its ``log`` and the KL are moderate.  There it is formed as
    ``(s a)/(t/b) = rho a b``, ``a = 2**(maxexp - 5)``, ``b = 2**5``: exact scalings
    (``s < 16`` there, so ``s a`` is finite; ``t > s 2**(maxexp - 4)``, so ``t/b`` is
    normal) that bring the ratio of any two normal floats into the normal range, and keep
    ``t/b`` large enough for JAX's quotient rule, which squares it (and the quotient normal,
    so that the gradient of its ``log`` stays finite).  Then
    ``log(2 rho) = log(2 quotient) - log(ab)``, and the square, below ``2**-240``, is
    dropped.  The quotient is bounded by half the largest float, so that ``2 quotient``
    (exact) and its ``log`` stay finite for ``scale_q = 0`` or ``rho > max/2`` (where the
    square is ``inf``, as is the KL), and a negative one stays negative.  The 2 multiplies
    the quotient, not ``s``: ``2 s`` would overflow for ``s > max/2`` at a moderate ratio.
    """
    dtype = scale_p.dtype
    largest = float(xp.finfo(dtype).max)
    max_exponent = math.frexp(largest)[1]
    tiny = mask(scale_p * 2.0 ** (max_exponent - 4) < scale_q, dtype, xp)
    boost = 1.0 + tiny * (2.0 ** (max_exponent - 5) - 1.0)  # 1 or a, exactly
    shrink = 1.0 - tiny * (31.0 / 32.0)  # 1 or 1/b, exactly
    half = 0.5 * largest
    quotient = bounded_quotient(scale_p * boost, scale_q * shrink, -half, half, xp)
    twice_quotient = 2.0 * quotient
    twice_ratio = (1.0 - tiny) * twice_quotient  # 2 rho, or 0 where tiny
    log_twice_ratio = xp.log(twice_quotient) - tiny * (max_exponent * math.log(2))
    return (0.125 * twice_ratio) * twice_ratio - (log_twice_ratio + _HALF_MINUS_LOG_TWO)


def _log_scale_ratio(p: Normal, q: Normal, xp: Any) -> Any:
    """``log(scale_p / scale_q)`` when at least one is given by its log.

    Two log-scales: their difference.  Mixed: :func:`~kullback._double_word.log_difference`,
    which never rounds ``log(scale)``, so that near equality the result is not swamped by
    that rounding amplified by ``|log scale| / |r|``.  A unit scale given as a Python number
    (the prior ``N(0, 1)``) has an exact log of 0, and is left out.
    """
    if p.log_scale is not None and _has_unit_scale(q):
        return p.log_scale
    if q.log_scale is not None and _has_unit_scale(p):
        return -q.log_scale
    if p.log_scale is not None and q.log_scale is not None:
        return p.log_scale - q.log_scale
    if p.log_scale is None:
        return _log_difference(p, q.log_scale, xp)
    return -_log_difference(q, p.log_scale, xp)


def _has_unit_scale(distribution: Normal) -> bool:
    """Whether the scale was given as the Python number 1, or the log-scale as 0 (the usual
    prior ``N(0, 1)``): terms with its log or its inverse are then left out, exactly."""
    return (
        python_number(distribution, "scale") == 1.0
        or python_number(distribution, "log_scale") == 0.0
    )


def _log_difference(by_scale: Normal, log_scale: Any, xp: Any) -> Any:
    """:func:`~kullback._double_word.log_difference` of ``by_scale.scale`` and ``log_scale``.

    A scale given as a Python number (a prior ``N(0, 1.7)``; a unit scale never gets here,
    see :func:`_has_unit_scale`) has its log words computed in Python, exactly, and enters
    as three constants; one that broadcasts has them computed once per call, not once per
    slice.
    """
    scale = by_scale.scale
    number = python_number(by_scale, "scale")
    words = None
    if number is not None:
        words = log_words_of_number(number, scale.dtype == xp.float64)
    if words is not None:
        device = _namespace.device_of(scale)
        constants = tuple(
            _namespace.opaque(xp.asarray(w, dtype=scale.dtype, device=device), xp) for w in words
        )
        return subtract_from_words(constants, log_scale, xp)
    if not smaller_than_result(scale, log_scale):
        return log_difference(scale, log_scale, xp)
    shared = shared_across_slices(scale, "log_words", lambda: log_words(scale, xp))
    return subtract_from_words(shared, log_scale, xp)


def _location_term(p: Normal, q: Normal, xp: Any) -> Any:
    """``((loc_p - loc_q) / scale_q)**2 / 2``, with no overflow before the result's own.

    Against the prior ``N(0, 1)`` given as Python numbers this is ``(loc_p/2) loc_p``.
    """
    if python_number(q, "loc") == 0.0 and _has_unit_scale(q):
        return (0.5 * p.loc) * p.loc
    if q.scale is not None:
        # halves first, so that loc_p - loc_q cannot overflow; inf for scale_q = 0
        half_gap = (0.5 * p.loc - 0.5 * q.loc) / q.scale
        return 2.0 * (half_gap * half_gap)
    difference = p.loc - q.loc
    dtype = difference.dtype
    # Where exp(-2 log_t) is a normal float (|log_t| <= limit): (d/2) * (d * exp(-2 log_t)),
    # three roundings.  Beyond: (d'/2) * d' with d' = d * exp(-log_t), one more rounding but
    # no intermediate overflow or underflow.  Both are (d'/2) * (d' * factor), with d' = d
    # and factor = exp(-2 log_t) inside, d' = d exp(-log_t) and factor = 1 outside, selected
    # exactly by 0/1 masks from exponentials capped below the overflow threshold: finite
    # where unselected, and never multiplied by 0 (an infinite difference gives +inf).
    # exp of the cap is the largest float (to within the backend's exp); a log-scale beyond it
    # is a scale that is not representable, and a nonzero difference there gives the capped
    # (too small) value only if d * exp(-log_t) is itself below about 1e19.
    largest_exponent = math.log(float(xp.finfo(dtype).max)) * (1 - 2 * float(xp.finfo(dtype).eps))
    limit = 0.45 * largest_exponent
    outside = mask(xp.abs(q.log_scale) > limit, dtype, xp)
    inside = 1 - outside
    inverse_variance = xp.exp(
        _namespace.clip(-2.0 * q.log_scale, -largest_exponent, largest_exponent, xp)
    )
    inverse_scale = xp.exp(_namespace.clip(-q.log_scale, None, largest_exponent, xp))
    scaled = difference * (inside + outside * inverse_scale)  # d, or d exp(-log_t)
    factor = inside * inverse_variance + outside  # exp(-2 log_t), or 1
    return (0.5 * scaled) * (scaled * factor)


@register_kl(Normal, Normal)
def _kl_normal_normal(p: Normal, q: Normal, *, xp: Any) -> Any:
    if p.scale is not None and q.scale is not None:
        variance_term = _variance_term_from_scales(p.scale, q.scale, xp)
    else:
        variance_term = half_expm1mx(2.0 * _log_scale_ratio(p, q, xp), xp)
    return variance_term + _location_term(p, q, xp)
