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

* ``scale`` vs ``scale``: see :func:`_variance_term_from_scales` (TwoSum of ``s - t``, one
  ``log1p`` of a selected argument, a Newton step from one series evaluation, and the forms
  ``e**2/2 + (e - log1p e)`` for ``-log 2 <= r <= 2`` and ``(s/t)**2/2 - 1/2 - r`` beyond).
* ``log_scale`` vs ``log_scale``: ``r = log_s - log_t``, exact when close.  When the
  log-scales differ a lot their difference is rounded, and ``e**(2r)`` amplifies that
  rounding by ``2|r|``: the problem itself is that ill-conditioned in the log-scales.
* mixed: ``r = log(s) - log_t`` (or ``log_s - log(t)``) with :func:`_log`.  The rounding
  of ``log(s)`` is amplified by about ``2|log s| / |r|`` near equality: the known gap of
  mixed parameterizations (a double-word ``exp`` or ``log`` would remove it).
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

from .._registry import register_kl
from ..distributions import Normal
from ..special import bounded_quotient, half_expm1mx, half_expm1mx_series, mask

__all__: list[str] = []

# Beyond this |log-ratio| the variance term of two scales is computed from their ratio.
_FAR = 2.0


def _variance_term_from_scales(scale_p: Any, scale_q: Any, xp: Any) -> Any:
    """``(s**2/t**2 - 1)/2 - log(s/t)`` from two scales ``s``, ``t``.

    * ``s - t`` is split into its rounded value and its exact rounding error (TwoSum), so
      ``e = (s - t)/t`` and ``y = (t - s)/s`` carry one rounding each whatever the ratio.
    * One ``log1p``, of ``z = e`` where ``s >= t/2`` and of ``z = y`` elsewhere (never of an
      argument near -1): ``L = log1p(z)`` and ``r = log(s/t) = ±L``.
    * For ``L <= 2``, the series at ``L/2`` and the doubling identity
      ``expm1mx(2w) = 2 expm1mx(w) + expm1(w)**2`` give ``m = expm1mx(L)``, and the Newton
      step ``delta = ((z - L) - m) / (1 + z)`` corrects ``L``: the accuracy of the
      backend's ``log1p`` no longer matters (``z - L`` is exact, Sterbenz).
    * ``-log 2 <= r <= 2``: ``e**2/2 + (e - log1p(e))``, the second term as
      ``(e - L) - delta``: two non-negative terms, all from the one rounded ``e``.
    * elsewhere ``(s/t)**2/2 - 1/2 - r``: at most a factor 1.1 of cancellation for
      ``r > 2``, a sum of non-negative terms for ``r < -log 2``.  Going through ``exp(2r)``
      instead would multiply the rounding of ``r`` by ``2|r|``.
    """
    dtype = scale_p.dtype
    difference = scale_p - scale_q
    # TwoSum: the exact rounding error of scale_p - scale_q (0 when the scales are close)
    virtual = difference - scale_p
    rounding = (scale_p - (difference - virtual)) + (-scale_q - virtual)
    del virtual
    close = mask(scale_p + scale_p >= scale_q, dtype, xp)  # e >= -1/2
    # sqrt(smaller scale) * 0 turns a negative scale into NaN, and is 0 otherwise.
    guard = xp.sqrt(xp.minimum(scale_p, scale_q)) * 0.0
    # The rounding error is 0 unless both scales are nonzero; dividing it by a zero scale
    # replaced with 1 avoids a 0/0 and changes nothing else.
    excess = difference / scale_q + rounding / (scale_q + mask(scale_q == 0, dtype, xp))
    inverse_excess = (-difference) / scale_p + (-rounding) / (
        scale_p + mask(scale_p == 0, dtype, xp)
    )
    del difference, rounding
    z = close * excess + (1 - close) * inverse_excess + guard
    del inverse_excess, guard
    log1p_z = xp.log1p(z)
    far = mask(log1p_z > _FAR, dtype, xp)

    # Series and Newton step, from values clipped to where they are used (finite elsewhere).
    clipped = xp.clip(log1p_z, -_FAR, _FAR)
    half = 0.5 * clipped
    m_half = 2.0 * half_expm1mx_series(half, xp)  # expm1mx(L/2)
    expm1_half = half + m_half
    m = 2.0 * m_half + expm1_half * expm1_half  # expm1mx(L)
    del half, m_half, expm1_half
    z_near = xp.clip(z, -0.9, 7.0)
    del z
    difference_near = z_near - clipped  # exact
    # Where delta is used (near, or r >= -2 on the far side) it is about one ulp of L.
    delta = bounded_quotient(difference_near - m, 1.0 + z_near, -1.0, 1.0, xp)
    del m
    near = close * (1 - far)
    excess_near = xp.clip(excess, -0.9, 7.0)  # = z_near where near
    del excess
    value = near * ((0.5 * excess_near) * excess_near + (difference_near - delta))
    del excess_near, difference_near

    largest = float(xp.finfo(dtype).max)
    ratio = bounded_quotient(scale_p, scale_q, None, largest, xp)  # inf still squares to inf
    # r is capped above so that inf - inf cannot arise when scale_q = 0 (ratio = inf).
    log_ratio = xp.clip((2.0 * close - 1.0) * (log1p_z + (1 - far) * delta), None, largest)
    return value + (1 - near) * ((0.5 * ratio) * ratio - (0.5 + log_ratio))


def _log(scale: Any, xp: Any) -> Any:
    """``log(scale)`` to about one ulp on every backend, via ``log1p`` of a non-negative
    argument that is exact or rounded once: ``s - 1`` for ``s >= 1``, and
    ``-log1p((1 - s)/s)`` for ``s < 1`` (``1 - s`` is exact near 1).  NumPy's float32
    ``log`` is 2.75 ulp off near 1, and JAX's ``log1p`` up to 122 ulp for negative
    arguments."""
    at_least_one = mask(scale >= 1, scale.dtype, xp)
    argument = at_least_one * (scale - 1.0) + (1 - at_least_one) * ((1.0 - scale) / scale)
    return (2.0 * at_least_one - 1.0) * xp.log1p(argument)


def _log_scale_ratio(p: Normal, q: Normal, xp: Any) -> Any:
    """``log(scale_p / scale_q)`` when at least one is given by its log."""
    log_p = p.log_scale if p.log_scale is not None else _log(p.scale, xp)
    log_q = q.log_scale if q.log_scale is not None else _log(q.scale, xp)
    return log_p - log_q


def _location_term(p: Normal, q: Normal, xp: Any) -> Any:
    """``((loc_p - loc_q) / scale_q)**2 / 2``, with no overflow before the result's own."""
    if q.scale is not None:
        largest = float(xp.finfo(q.scale.dtype).max)
        # ±inf (scale_q = 0) still squares to inf
        half_gap = bounded_quotient(0.5 * p.loc - 0.5 * q.loc, q.scale, -largest, largest, xp)
        return (2.0 * half_gap) * half_gap
    difference = p.loc - q.loc
    dtype = difference.dtype
    # Where exp(-2 log_t) is a normal float (|log_t| <= limit): (d/2) * (d * exp(-2 log_t)),
    # three roundings.  Beyond: (d/2 * exp(-log_t)) * (d * exp(-log_t)), one more rounding
    # but no intermediate overflow or underflow.  Each form gets a zero difference where it is
    # not selected, and exponents capped below the overflow threshold, so both stay finite.
    # exp of the cap is the largest float (to within the backend's exp); a log-scale beyond it
    # is a scale that is not representable, and a nonzero difference there gives the capped
    # (too small) value only if d * exp(-log_t) is itself below about 1e19.
    largest_exponent = math.log(float(xp.finfo(dtype).max)) * (1 - 2 * float(xp.finfo(dtype).eps))
    limit = 0.45 * largest_exponent
    outside = mask(xp.abs(q.log_scale) > limit, dtype, xp)
    inside_difference = (1 - outside) * difference
    outside_difference = outside * difference
    inverse_variance = xp.exp(xp.clip(-2.0 * q.log_scale, -largest_exponent, largest_exponent))
    inverse_scale = xp.exp(xp.clip(-q.log_scale, None, largest_exponent))
    scaled = outside_difference * inverse_scale
    return (0.5 * inside_difference) * (inside_difference * inverse_variance) + (
        0.5 * scaled
    ) * scaled


@register_kl(Normal, Normal)
def _kl_normal_normal(p: Normal, q: Normal, *, xp: Any) -> Any:
    if p.scale is not None and q.scale is not None:
        variance_term = _variance_term_from_scales(p.scale, q.scale, xp)
    else:
        variance_term = half_expm1mx(2.0 * _log_scale_ratio(p, q, xp), xp)
    return variance_term + _location_term(p, q, xp)
