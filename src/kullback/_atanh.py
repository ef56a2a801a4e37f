"""``log(n/d)`` near ``n = d`` without a ``log``: ``2 atanh((n - d)/(n + d))`` by a short series.

Backends' ``log`` and ``log1p`` are up to several ulp off near 1 (NumPy's float32 ``log`` up
to 3.8 ulp, JAX's float64 ``log1p`` about 100 ulp for ``|x| > 0.1``); the series needs only
arithmetic, and ``n - d`` is exact (Sterbenz) for ``d/2 <= n <= 2d``.
"""

from __future__ import annotations

from typing import Any

from ._double_word import _two_sum

__all__ = ["Q_FLOAT32", "Q_FLOAT64", "log_ratio_near", "log_ratio_near_words"]

# Q(w) = (atanh(sqrt w)/sqrt w - 1)/(2w) on [0, 1/9]: Chebyshev fits of the lowest degree
# whose whole evaluation of the near form stays within a fraction of a unit of roundoff of that
# with an exact Q (tools/fit_atanh_series.py makes and checks them).
Q_FLOAT32 = (
    0.16666660084174809, 0.10001890161227801, 0.0705915495132762, 0.06712874505709288,
)  # fmt: skip
Q_FLOAT64 = (
    0.16666666666666666, 0.10000000000003646, 0.0714285714177719, 0.05555555679356966,
    0.045454473590332146, 0.03846392516239656, 0.03328536052413734, 0.03000268202397678,
    0.022001846215361685, 0.04041011402985883,
)  # fmt: skip


def atanh_correction(w: Any, xp: Any) -> Any:
    """``Q(w)``, with ``atanh(u) = u (1 + 2 w Q(w))`` for ``w = u**2 <= 1/9``."""
    coefficients = Q_FLOAT64 if w.dtype == xp.float64 else Q_FLOAT32
    q = coefficients[-1] * w + coefficients[-2]
    for c in coefficients[-3::-1]:
        q = q * w + c
    return q


def log_ratio_near(difference: Any, total: Any, xp: Any) -> Any:
    """``log(n/d)`` from ``difference = n - d`` (exact) and ``total = n + d``, for
    ``d/2 <= n <= 2d`` (``|u| <= 1/3``): ``2u + 4u w Q(w)``, ``u = difference/total``.

    Within about 1.5 ulp: ``u`` is rounded twice (the sum and the quotient), the
    correction is at most 0.05 of the result.  Outside the interval the value is finite
    (``u`` is clipped) but meaningless.
    """
    u = xp.clip(difference / total, -1.0, 1.0)
    w = u * u
    return 2.0 * u + (4.0 * u) * (w * atanh_correction(w, xp))


def log_ratio_near_words(difference: Any, numerator: Any, denominator: Any, xp: Any) -> Any:
    """:func:`log_ratio_near` as ``(hi, lo)``: ``hi = 2 fl(difference/s)`` with the rounding
    of ``s = numerator + denominator`` carried into ``lo`` (TwoSum), with the series'
    correction: about one rounding (the quotient's) in ``hi + lo``."""
    total, total_error = _two_sum(numerator, denominator)
    u = xp.clip(difference / total, -1.0, 1.0)
    w = u * u
    # d/(s + e) = (d/s)(1 - e/s) to first order
    correction = (4.0 * u) * (w * atanh_correction(w, xp)) - (2.0 * u) * (total_error / total)
    return 2.0 * u, correction
