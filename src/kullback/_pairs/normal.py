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

The error of the result is, to first order, twice the relative error of ``r`` and of ``d``,
so both are computed to a few units of roundoff:

* ``scale`` vs ``scale``: ``r = sign * log1p(|s - t| / min(s, t))`` with
  ``sign = copysign(1, s - t)``.  ``s - t`` is exact when the scales are close (Sterbenz),
  the argument of ``log1p`` is ``>= 0`` so ``1 + y`` never cancels, and the expression is
  smooth at ``s = t`` (the sign is a constant there), so the Hessian is right.
* ``log_scale`` vs ``log_scale``: ``r = log_s - log_t``, exact when close.  When the
  log-scales differ a lot their difference is rounded, and ``e**(2r)`` amplifies that
  rounding by ``2|r|``: the problem itself is that ill-conditioned in the log-scales.
* mixed: ``r = log(s) - log_t`` (or ``log_s - log(t)``).
* ``d/2 = (a/2 - b/2) / t``: halving first means ``a - b`` cannot overflow when the result
  does not, and ``d**2/2`` is computed as ``(2 * (d/2)) * (d/2)``.
"""

from __future__ import annotations

from typing import Any

from .._registry import register_kl
from ..distributions import Normal
from ..special import half_expm1mx

__all__: list[str] = []


def _log_scale_ratio(p: Normal, q: Normal, xp: Any) -> Any:
    """``log(scale_p / scale_q)`` to a few units of roundoff relative to itself."""
    if p.scale is not None and q.scale is not None:
        difference = p.scale - q.scale
        sign = xp.copysign(xp.ones_like(difference), difference)
        smaller = xp.minimum(p.scale, q.scale)
        # sqrt(smaller) * 0 turns a negative scale into NaN, and is 0 otherwise.
        ratio_minus_one = (sign * difference) / smaller + xp.sqrt(smaller) * 0.0
        return sign * xp.log1p(ratio_minus_one)
    log_p = p.log_scale if p.log_scale is not None else xp.log(p.scale)
    log_q = q.log_scale if q.log_scale is not None else xp.log(q.scale)
    return log_p - log_q


@register_kl(Normal, Normal)
def _kl_normal_normal(p: Normal, q: Normal, *, xp: Any) -> Any:
    log_ratio = _log_scale_ratio(p, q, xp)
    scale_q = q.scale if q.scale is not None else xp.exp(q.log_scale)
    half_gap = (0.5 * p.loc - 0.5 * q.loc) / scale_q
    return half_expm1mx(2.0 * log_ratio, xp) + (2.0 * half_gap) * half_gap
