r"""Accurate elementwise primitives for the stable KL forms, written against the array API.

Every function here takes arrays of any supported framework (or Python scalars), works in
the input's floating dtype, and returns an array of the input's namespace, dtype and device.
"""

from __future__ import annotations

import math
from typing import Any

from . import _namespace

__all__ = ["expm1mx"]

# Near-zero polynomial P with e**x - 1 - x = x**2 * P(x) on [-1, 1]: a Chebyshev fit of the
# lowest degree whose rounded Horner evaluation stays within 1.6 units of roundoff of P
# (degree 7 for float32, 13 for float64; tools/fit_expm1mx.py makes and checks them).
# Stored halved, because the KLs need (e**x - 1 - x) / 2.
_HALF_POLY_FLOAT32 = tuple(
    c / 2
    for c in (
        0.49999999781421683, 0.16666666646842135, 0.04166673659523746, 0.00833333967591706,
        0.0013885396911807102, 0.00019838101968683888, 2.535851224463976e-05,
        2.8062802582276946e-06,
    )
)  # fmt: skip
_HALF_POLY_FLOAT64 = tuple(
    c / 2
    for c in (
        0.5, 0.16666666666666666, 0.04166666666666609, 0.008333333333333299,
        0.0013888888888981404, 0.00019841269841324198, 2.4801587246096818e-05,
        2.7557319191381816e-06, 2.755733506893373e-07, 2.5052117695907823e-08,
        2.0874435575864273e-09, 1.6057679623801638e-10, 1.1639194124150522e-11,
        7.746178593018827e-13,
    )
)  # fmt: skip

# For x >= 1:  (e**x - 1 - x) / 2 = K1 * expm1(x - 1) + (K0 - x / 2),  K1 = e / 2,
# K0 = (e - 1) / 2.  x - 1 is exact, and e**(x - 1) overflows only where the result does.
# K1 is used as 0.5 + _K1_MINUS_HALF, which reproduces float(K1) exactly.
_K1_MINUS_HALF = math.e / 2 - 0.5
_K0 = (math.e - 1) / 2


def _half_polynomial(dtype: Any, xp: Any) -> tuple[float, ...]:
    return _HALF_POLY_FLOAT64 if dtype == xp.float64 else _HALF_POLY_FLOAT32


def half_expm1mx(x: Any, xp: Any) -> Any:
    r"""``(e**x - 1 - x) / 2`` for an array ``x`` of namespace ``xp``; private workhorse.

    Three regions, chosen elementwise:

    * ``|x| < 1``: ``x**2 * P(x) / 2`` with the fitted polynomial ``P`` (no cancellation).
    * ``x >= 1``: ``K1 * expm1(x - 1) + (K0 - x/2)``: both addends are well conditioned, and
      nothing overflows before the result does.
    * ``x <= -1``: ``expm1(x)/2 - x/2``, a sum of a term in ``[-1/2, -0.31]`` and one
      ``>= 1/2``: at most a factor 1.7 of cancellation.

    The polynomial is evaluated on ``clip(x, -2, 2)`` so that the untaken branch stays
    finite (and so do gradients through ``where``).
    """
    coefficients = _half_polynomial(x.dtype, xp)
    near_zero = xp.abs(x) <= 1
    # Clipping to a wider interval than [-1, 1] keeps the gradient exact at x = ±1, where
    # a clip to ±1 would tie (and JAX splits the gradient of a tie in two).
    clipped = xp.clip(x, -2.0, 2.0)
    poly = coefficients[-1] * clipped + coefficients[-2]
    for c in coefficients[-3::-1]:
        poly = poly * clipped + c
    series = (clipped * clipped) * poly

    # is_positive is 1 for x >= 1 and 0 for x <= -1 (its values in between are never used).
    is_positive = xp.clip(x, 0.0, 1.0)
    expm1_shifted = xp.expm1(x - is_positive)
    factor = is_positive * _K1_MINUS_HALF + 0.5
    finite_x = xp.clip(x, None, float(xp.finfo(x.dtype).max))  # +inf - inf would give NaN
    tail = factor * expm1_shifted + (is_positive * _K0 - 0.5 * finite_x)
    return xp.where(near_zero, series, tail)


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
    the result about ``x**2/2``).  Here:

    * for ``|x| < 1``, ``x**2 P(x)`` with a polynomial ``P`` fitted to ``(e**x-1-x)/x**2``
      (degree 7 in float32, 13 in float64: the lowest that meets the error bound);
    * for ``x >= 1``, ``e * expm1(x - 1) + (e - 1 - x)`` (well conditioned, ``x - 1``
      exact, no premature overflow);
    * for ``x <= -1``, ``expm1(x) - x``.

    Every branch is evaluated on an input that keeps it finite, so gradients through the
    selection are finite.  The result is at most a few ulp from the exact value and is
    ``>= 0`` for every input; ``inf`` for ``x = ±inf``; NaN for NaN.

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
        return 2 * half_expm1mx(resolved.asarray(x), xp)
