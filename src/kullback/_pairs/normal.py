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
both are computed to about one unit of roundoff:

* ``scale`` vs ``scale``: ``r = sign * log1p(|s - t| / min(s, t))`` with
  ``sign = copysign(1, s - t)``.  ``s - t`` is exact when the scales are close (Sterbenz),
  the argument of ``log1p`` is ``>= 0`` so ``1 + y`` never cancels, and the expression is
  smooth at ``s = t`` (the sign is constant there), so the Hessian is right.  For
  ``r > 2`` the variance term is ``(s/t)**2/2 - 1/2 - r`` instead: going through
  ``exp(2r)`` would multiply the rounding of ``r`` by ``2r``.
* ``log_scale`` vs ``log_scale``: ``r = log_s - log_t``, exact when close.  When the
  log-scales differ a lot their difference is rounded, and ``e**(2r)`` amplifies that
  rounding by ``2|r|``: the problem itself is that ill-conditioned in the log-scales.
* mixed: ``r = log(s) - log_t`` (or ``log_s - log(t)``).  The rounding of ``log(s)`` is
  amplified by ``2|log s| / |r|`` when the distributions are close (see the accuracy notes
  in the documentation).
* ``d**2/2``: with a scale, ``(2 * (d/2)) * (d/2)`` with ``d/2 = (a/2 - b/2) / t`` (halving
  first, ``a - b`` cannot overflow when the result does not); with a log-scale,
  ``((a - b)/2) * ((a - b) * exp(-2 log_t))``, three roundings instead of the five of
  squaring a ``d`` that already carries the rounding of ``exp``.

Special values: NaN in, NaN out; a negative scale gives NaN; a zero scale gives ``+inf``
(except for the 0/0 of equal locations and ``scale_q = 0``, which is NaN).
"""

from __future__ import annotations

import math
from typing import Any

from .._registry import register_kl
from ..distributions import Normal
from ..special import half_expm1mx, half_expm1mx_series, mask

__all__: list[str] = []

# Above this log-ratio the variance term of scale/scale inputs is computed from the ratio.
_FAR = 2.0


def _variance_term_from_scales(scale_p: Any, scale_q: Any, xp: Any) -> Any:
    """``(s**2/t**2 - 1)/2 - log(s/t)`` from two scales ``s``, ``t``.

    With ``e = s/t - 1`` (exact numerator when the scales are within a factor 2) and
    ``r = log(s/t)`` as the backend's ``log1p`` computes it:

    * ``m = expm1mx(r)`` from the series, for ``|r| <= 1``, gives the Newton correction
      ``delta = ((e - r) - m) / (1 + e)`` of ``r``: it cancels the rounding (and the
      inaccuracy, up to 2 ulp on some backends) of ``log1p``, which the result would
      otherwise double.
    * near (``|r| <= 1/2``): ``e**2/2 + (e - log1p(e))`` with
      ``e - log1p(e) = m + ((e - r) - m) * e/(1 + e)``, leaving only the rounding of ``e``.
    * middle: ``expm1mx(2r)/2`` at the corrected ``r``.
    * far (``r > 2``): ``(s/t)**2/2 - 1/2 - r``; through ``exp(2r)`` the rounding of ``r``
      would be multiplied by ``2r``.
    """
    dtype = scale_p.dtype
    difference = scale_p - scale_q
    sign = xp.copysign(xp.ones_like(difference), difference)
    smaller = xp.minimum(scale_p, scale_q)
    # sqrt(smaller) * 0 turns a negative scale into NaN, and is 0 otherwise.
    log_ratio = sign * xp.log1p((sign * difference) / smaller + xp.sqrt(smaller) * 0.0)
    del sign, smaller

    # Values are clipped to where they are used, so that they are finite where they are not.
    excess = xp.clip(difference / scale_q, -0.7, 2.0)
    del difference
    near_ratio = xp.clip(log_ratio, -1.0, 1.0)  # the tie at ±1 is outside the near region
    m = 2.0 * half_expm1mx_series(near_ratio, xp)
    residual = (excess - near_ratio) - m  # e - expm1(r): exact subtraction first (Sterbenz)
    near = mask(xp.abs(log_ratio) <= 0.5, dtype, xp)
    value = near * ((0.5 * excess) * excess + (m + residual * (excess / (1.0 + excess))))
    correctable = mask(xp.abs(log_ratio) <= 1.0, dtype, xp)
    corrected = log_ratio + correctable * (residual / (1.0 + excess))
    del excess, near_ratio, m, residual, correctable

    far = mask(log_ratio > _FAR, dtype, xp)
    middle = 1 - near - far
    value = value + middle * half_expm1mx(2.0 * xp.clip(corrected, None, 2 * _FAR), xp)
    ratio = scale_p / scale_q
    largest = float(xp.finfo(dtype).max)
    # log_ratio is capped so that the far value is finite where unused (scale_p = 0) and
    # inf - inf cannot arise where it is used (scale_q = 0).
    capped = xp.clip(log_ratio, -largest, largest)
    return value + far * ((0.5 * ratio) * ratio - (0.5 + capped))


def _log_scale_ratio(p: Normal, q: Normal, xp: Any) -> Any:
    """``log(scale_p / scale_q)`` when at least one is given by its log."""
    log_p = p.log_scale if p.log_scale is not None else xp.log(p.scale)
    log_q = q.log_scale if q.log_scale is not None else xp.log(q.scale)
    return log_p - log_q


def _location_term(p: Normal, q: Normal, xp: Any) -> Any:
    """``((loc_p - loc_q) / scale_q)**2 / 2``."""
    if q.scale is not None:
        half_gap = (0.5 * p.loc - 0.5 * q.loc) / q.scale
        return (2.0 * half_gap) * half_gap
    difference = p.loc - q.loc
    # exp(-2 log_t) is capped at the largest float so that a zero difference gives 0, not NaN.
    largest_exponent = math.log(float(xp.finfo(difference.dtype).max))
    inverse_variance = xp.exp(xp.clip(-2.0 * q.log_scale, None, largest_exponent))
    return (0.5 * difference) * (difference * inverse_variance)


@register_kl(Normal, Normal)
def _kl_normal_normal(p: Normal, q: Normal, *, xp: Any) -> Any:
    if p.scale is not None and q.scale is not None:
        variance_term = _variance_term_from_scales(p.scale, q.scale, xp)
    else:
        variance_term = half_expm1mx(2.0 * _log_scale_ratio(p, q, xp), xp)
    return variance_term + _location_term(p, q, xp)
