r"""KL divergence between two Bernoulli distributions: the two-category Categorical KL.

``Bernoulli(logits=x)`` is the Categorical with logits ``(0, x)`` and ``Bernoulli(probs=P)``
the one with probs ``(1 - P, P)``; the KL is that of
:func:`~kullback._pairs.categorical.kl_from_weights`, with the categories stacked on a last
axis of length 2 (see :mod:`kullback._pairs.categorical` for the derivation).  What is
particular to two categories:

* logits: ``x - max(0, x) = min(x, 0)`` and ``-max(0, x)`` are exact, so ``v`` needs no
  double words, and the weights are ``1`` and ``e**-|x|``;
* probs: ``log((1 - Q)/(1 - P))`` where ``P`` and ``Q`` are close comes from the exact
  ``P - Q`` (``2 atanh((P - Q)/(2 - P - Q))``), not from the rounded ``1 - P`` and
  ``1 - Q``; the log of ``1 - Q`` (mixed parameterizations) from ``2 atanh(-Q/(2 - Q))``
  for ``Q <= 1/2``.

Logits of ``±inf`` are the certain outcomes (``P = 1`` or ``0``); NaN gives NaN, and so do
probs outside ``[0, 1]``.
"""

from __future__ import annotations

from typing import Any

from .. import _namespace
from .._atanh import log_ratio_near
from .._double_word import _two_sum, log_words
from .._registry import register_kl
from ..distributions import Bernoulli
from ..special import mask
from .categorical import _largest, _p_floor, _q_floor, _weight_scale, kl_from_weights

__all__: list[str] = []


def _stack(first: Any, second: Any, xp: Any) -> Any:
    first, second = xp.broadcast_arrays(first, second)
    return xp.stack([first, second], axis=-1)


def _logit_pair(logits: Any, floor_distance: float, xp: Any) -> tuple[Any, Any, Any]:
    """``(log-weights, weights, support)`` of the categories 0 and 1 of ``logits``, each
    stacked on a last axis: log-weights ``(-max(x, 0), min(x, 0))``, raised to at least
    ``-floor_distance`` (see :func:`kullback._pairs.categorical._logit_words`)."""
    zero = xp.zeros_like(logits)
    floor = -floor_distance
    first = _namespace.clip(-xp.maximum(logits, zero), floor, None, xp)
    second = _namespace.clip(xp.minimum(logits, zero), floor, None, xp)
    log_weights = _stack(first, second, xp)
    support = _stack(
        mask(logits < xp.inf, logits.dtype, xp), mask(logits > -xp.inf, logits.dtype, xp), xp
    )
    return log_weights, xp.exp(log_weights) * _weight_scale(logits.dtype, xp), support


def _prob_pair(probs: Any, xp: Any) -> tuple[Any, Any, Any]:
    """``(weights, support, domain)``: ``(1 - P, P)``, 0/1 supports, and 0 or NaN (for a
    probability outside ``[0, 1]`` or NaN)."""
    dtype = probs.dtype
    scale = _weight_scale(dtype, xp)
    weights = _stack((1.0 - probs) * scale, probs * scale, xp)
    support = _stack(mask(probs < 1, dtype, xp), mask(probs > 0, dtype, xp), xp)
    domain = (0.0 * probs) / mask((probs >= 0) & (probs <= 1), dtype, xp)
    return weights, support, xp.expand_dims(domain, axis=-1)


def _log_pair(probs: Any, support: Any, xp: Any) -> Any:
    """``(log(1 - P), log P)``, each to about an ulp (finite, 0, where the category has
    probability 0): ``log(1 - P)`` for ``P <= 1/2`` by the series."""
    dtype = probs.dtype
    small = mask(probs <= 0.5, dtype, xp)
    bounded = _namespace.clip(probs, 0.0, 1.0, xp)
    series = log_ratio_near(-bounded, 2.0 - bounded, xp)
    complement = 1.0 - bounded
    plain = _rounded_log(complement + small + (1.0 - support[..., 0]), xp)
    first = small * series + (1.0 - small) * plain
    second = _rounded_log(bounded + (1.0 - support[..., 1]), xp)
    return _stack(first, second, xp)


def _rounded_log(x: Any, xp: Any) -> Any:
    """``log(x)`` rounded once (from three words: a backend's float32 ``log`` is up to
    3.8 ulp off)."""
    words = log_words(x, xp)
    return words[0] + (words[1] + words[2])


def _ratio_pair(probs_p: Any, probs_q: Any, xp: Any) -> Any:
    """``(log((1 - Q)/(1 - P)), log(Q/P))`` where both categories have positive
    probability under both (finite elsewhere)."""
    dtype = probs_p.dtype
    # in units of the weights (an exact scaling): no subnormal differences for JAX and CuPy
    # to flush
    scale = _weight_scale(dtype, xp)
    p = _namespace.clip(probs_p, 0.0, 1.0, xp) * scale
    q = _namespace.clip(probs_q, 0.0, 1.0, xp) * scale
    ratios = []
    for numerator, denominator, difference in (
        (scale - q, scale - p, p - q),
        (q, p, q - p),
    ):
        safe_n = numerator + mask(numerator <= 0, dtype, xp)
        safe_d = denominator + mask(denominator <= 0, dtype, xp)
        near = mask((safe_n <= 2.0 * safe_d) & (safe_d <= 2.0 * safe_n), dtype, xp)
        series = log_ratio_near(difference, safe_n + safe_d, xp)
        quotient = _namespace.clip(safe_n / safe_d, None, _largest(dtype, xp), xp)
        far = xp.log(quotient + near)
        ratios.append(near * series + (1.0 - near) * far)
    return _stack(ratios[0], ratios[1], xp)


def _normalized(probs: Any, weights: Any, support: Any, xp: Any) -> tuple[Any, Any, Any]:
    """``log((1 - P, P) / max(1 - P, P))`` as an exact double word (the logs rounded once),
    and the weights in the same units: the frame of a pair of logits (largest 0), so that
    ``v`` against logits is exact where the two are close."""
    logs = _log_pair(probs, support, xp)
    top = xp.maximum(logs[..., 0], logs[..., 1])
    hi, lo = _two_sum(logs, -xp.expand_dims(top, axis=-1))
    largest_weight = xp.maximum(weights[..., 0], weights[..., 1])
    scale = _weight_scale(probs.dtype, xp)
    safe = largest_weight + mask(largest_weight <= 0, probs.dtype, xp)
    return hi, lo, weights * xp.expand_dims(scale / safe, axis=-1)


@register_kl(Bernoulli, Bernoulli)
def _kl_bernoulli_bernoulli(p: Bernoulli, q: Bernoulli, *, xp: Any) -> Any:
    return _namespace.compiled(_bernoulli_kernel, xp)(p, q)


def _bernoulli_kernel(p: Bernoulli, q: Bernoulli, *, xp: Any) -> Any:
    def total(x: Any) -> Any:
        return x[..., 0] + x[..., 1]

    def largest(x: Any) -> Any:
        return xp.maximum(x[..., 0], x[..., 1])

    domain = None
    if p.logits is not None:
        dtype = p.logits.dtype
        log_p, weight_p, in_p = _logit_pair(p.logits, _p_floor(dtype, xp), xp)
    else:
        weight_p, in_p, domain = _prob_pair(p.probs, xp)
    if q.logits is not None:
        dtype = q.logits.dtype
        log_q, weight_q, in_q = _logit_pair(q.logits, _q_floor(dtype, xp), xp)
    else:
        weight_q, in_q, q_domain = _prob_pair(q.probs, xp)
        domain = q_domain if domain is None else domain + q_domain

    if p.logits is not None and q.logits is not None:
        v = (log_q - log_p, xp.zeros_like(log_p))
    elif p.logits is not None:
        q_hi, q_lo, weight_q = _normalized(q.probs, weight_q, in_q, xp)
        v = (q_hi - log_p, q_lo)
    elif q.logits is not None:
        p_hi, p_lo, weight_p = _normalized(p.probs, weight_p, in_p, xp)
        v = (log_q - p_hi, -p_lo)
    else:
        v = (_ratio_pair(p.probs, q.probs, xp), xp.zeros_like(weight_p))
    if domain is not None:
        weight_p = weight_p + domain
    weight_p, weight_q, v_hi, v_lo, in_p, in_q = xp.broadcast_arrays(
        weight_p, weight_q, v[0], v[1], in_p, in_q
    )
    v = (v_hi, v_lo)
    return kl_from_weights(weight_p, weight_q, v, in_p, in_q, total, largest, xp)
