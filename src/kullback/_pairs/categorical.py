r"""KL divergence between two Categorical distributions (logits or probs, mixed too).

Derivation
----------
With ``p_i = w_i / Z`` (unnormalized weights ``w``, ``Z = sum w``) and any ``v`` with
``w_i e**v_i`` proportional to ``q_i`` (``v = log q - log p`` up to a constant),

.. math::

    KL(p \| q) = \frac{1}{Z} \sum_{p_i > 0} w_i\,\mathrm{expm1mx}(v_i - L)
                 + e^{-L} \frac{M}{Z},
    \qquad L = \log\Bigl(1 + \frac{S}{Z}\Bigr),
    \qquad S = \sum_{p_i > 0} w_i \operatorname{expm1}(v_i) + M,

with ``expm1mx(x) = e**x - 1 - x >= 0`` and ``M`` the mass of ``q`` (in the same units)
where ``p_i = 0``: every term is ``>= 0``, and ``v_i - L = log(q_i/p_i)``.  As a function
of ``L`` the right-hand side is convex with its minimum (the KL) at the ``L`` above, with
second derivative 1 there, so an error ``delta`` in ``L`` changes the result by
``delta**2 / 2`` only: the normalizers never enter at first order.  ``S`` is a sum of
terms each computed to a few ulp (``expm1`` from the series of
:func:`~kullback.special.half_expm1mx`, never the backend's), so the error of ``L`` is a
few ulp of ``|v|`` and its effect on the KL far below an ulp.  Where
``v_i - L > 4`` the term is ``w_i e**(v_i - L) - w_i (1 + v_i - L)``, formed as
``u_i e**-L - w_i (1 + v_i - L)`` from ``u_i = w_i e**v_i``, which is at most ``Z`` in size
even where ``e**v_i`` overflows; there the two parts cancel by at most a factor 1.1.

``v`` by parameterization (each side's weights are normalized to its own largest):

* logits ``a`` vs logits ``b``: ``v = (b - max b) - (a - max a)``, each difference carried
  as an exact double word (TwoSum), and ``w = exp(a - max a)`` with its rounding carried
  (``e**hi (1 + lo)``).  A large common shift between ``a`` and ``b`` (where ``b - a`` is
  far from exact) and a ``v`` tiny against the logits are then both accurate to an ulp;
  a constant shift whose addition was exact gives exactly 0.
* probs ``P`` vs probs ``Q``: ``v = log(Q/P)``; for ``P/2 <= Q <= 2P`` as
  ``2 atanh((Q - P)/(Q + P))`` by a series (``Q - P`` exact), with no backend ``log``.
* mixed: the log of the given probability, rounded once, against the other side's exact
  double word; the rounding of ``log(prob)`` is the only error beyond a few ulp.

Support is decided from ``logits == -inf`` or ``probs == 0``, never from an underflowed
weight.  ``p_i = 0`` contributes 0 (also where ``q_i = 0``); ``q_i = 0 < p_i`` gives
``+inf``.  NaN anywhere in a row, a ``+inf`` logit, a row of ``-inf`` logits, probs that
sum to 0 or are negative give NaN for the row.

The three reduction stages (largest logit; ``Z`` and ``S``; the KL) are the fewest the
formula allows.  Selections are 0/1 masks between branches that are finite wherever they
are not selected, so gradients see no unselected branch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .. import _namespace
from .._atanh import log_ratio_near_words
from .._double_word import _two_sum, log_words
from .._registry import register_kl
from ..distributions import Categorical
from ..special import half_expm1mx, mask

__all__: list[str] = []

# Above this v - L the term is formed from q's weight (see the module docstring).
_LARGE = 4.0


def _expm1mx(x: Any, xp: Any) -> Any:
    return 2.0 * half_expm1mx(x, xp)


def kl_from_weights(
    weight_p: Any,
    weight_q: Any,
    v: tuple[Any, Any],
    in_p: Any,
    in_q: Any,
    total: Callable[[Any], Any],
    largest: Callable[[Any], Any],
    xp: Any,
) -> Any:
    r"""The KL from the weights and log-ratios of each category (see the module docstring).

    ``weight_p`` (``w``, finite, ``>= 0``), ``weight_q`` (``w e**v``, finite, ``>= 0``,
    0 outside q's support) and ``v = hi + lo`` (a pair: ``hi`` exact where the two
    distributions are close, ``lo`` a small correction; finite wherever selected, any
    finite value elsewhere) hold the categories along the last axis, which ``total`` (a
    sum) and ``largest`` (a max) reduce; ``in_p`` and ``in_q`` are the 0/1 supports.
    ``Z = total(w)`` is positive for a valid ``p``.  ``v = hi + lo`` is rounded once, and
    that one value serves both ``S`` and ``v - L``: the first-order cancellation of the
    errors of ``L`` between categories holds only for a ``v`` common to both (measured:
    ``(hi - L) + lo`` put a float64 row 31 ulp further off).
    """
    v_hi, v_lo = v
    value = v_hi + v_lo
    z = total(weight_p)
    both = in_p * in_q
    only_q = 1.0 - in_p
    # S: w (e**v - 1) where v <= 1 (the series; expm1 = v + expm1mx(v)), u - w above, and
    # q's mass where p is 0.
    small_v = mask(value <= 1.0, value.dtype, xp)
    # capped above the branch edge: a clip to it would tie there, and JAX halves the
    # gradient of a tied clip
    capped_v = _namespace.clip(value, None, 2.0, xp)
    near_terms = weight_p * (capped_v + _expm1mx(capped_v, xp))
    s_terms = in_p * (small_v * near_terms + (1.0 - small_v) * (weight_q - weight_p))
    s = total(s_terms + only_q * weight_q)
    log_normalizer = xp.expand_dims(xp.log1p(s / z), axis=-1)
    inverse_normalizer = xp.exp(-log_normalizer)
    r = value - log_normalizer
    large = mask(r > _LARGE, r.dtype, xp)
    capped_r = _namespace.clip(r, None, 2.0 * _LARGE, xp)
    small_terms = _small_terms(weight_p, capped_r, xp)
    large_terms = weight_q * inverse_normalizer - weight_p * (1.0 + r)
    terms = both * (small_terms + large * (large_terms - small_terms))
    terms = terms + only_q * weight_q * inverse_normalizer
    outside_q = largest(in_p * (1.0 - in_q))  # 1 where q_i = 0 < p_i: the KL is +inf
    return total(terms) / z + outside_q / (1.0 - outside_q)


def _small_terms(weight: Any, r: Any, xp: Any) -> Any:
    """``w expm1mx(r)``.  On backends that flush subnormal results (XLA, CuPy),
    ``expm1mx(r)`` is flushed to 0 for ``|r|`` below about ``2**(minexp/2)`` although the
    weighted term (weights are scaled up) is normal: there it is ``((w/2) r) r``, within
    ``|r|/3`` of it."""
    terms = weight * _expm1mx(r, xp)
    if not _namespace.flushes_subnormals(xp):
        return terms
    finfo = xp.finfo(r.dtype)
    tiny = mask(xp.abs(r) < float(finfo.eps) ** 2, r.dtype, xp)
    return terms + tiny * (((0.5 * weight) * r) * r - terms)


def pairwise_sum(x: Any, xp: Any) -> Any:
    """The sum over the last axis by halves (pairwise), to within ``log2(K)/2`` units of
    roundoff for non-negative terms, whatever the backend's ``sum`` does (NumPy's is
    sequential in 8 lanes below 128 terms: measured 5.4 ulp on 100 terms, one large).
    About one more pass over the terms; the tree has static shape (odd lengths get a zero).
    """
    n = x.shape[-1]
    if _namespace.is_lazy(xp) or not isinstance(n, int):
        # Dask sums chunks as a tree already; halving slices across chunks would
        # multiply them
        return xp.sum(x, axis=-1)
    while n > 8:
        if n % 2:
            x = xp.concat([x, xp.zeros_like(x[..., :1])], axis=-1)
            n += 1
        half = n // 2
        x = x[..., :half] + x[..., half:]
        n = half
    return xp.sum(x, axis=-1)


def _logit_words(logits: Any, floor_distance: float, xp: Any) -> tuple[Any, Any, Any, Any]:
    """``logits - max(logits)`` as an exact double word ``(hi, lo)``, the weights
    ``exp(hi) (1 + lo)`` and the 0/1 support ``logits > -inf``.

    Logits more than ``floor_distance`` below the largest (``-inf`` among them) are
    raised to it first, so that everything stays finite; callers choose a distance whose
    effect is nil (see :func:`_frames`).  A NaN or ``+inf`` logit, or a row of ``-inf``,
    makes the largest NaN or infinite and the row NaN.
    """
    top = xp.max(logits, axis=-1, keepdims=True)
    floor = xp.maximum(top - floor_distance, xp.full_like(top, -_largest(logits.dtype, xp)))
    hi, lo = _two_sum(xp.maximum(logits, floor), -top)
    scaled = xp.exp(hi) * _weight_scale(logits.dtype, xp)
    support = mask(logits > -xp.inf, logits.dtype, xp)
    return hi, lo, scaled + scaled * lo, support


def _weight_scale(dtype: Any, xp: Any) -> float:
    """Weights are scaled by ``2**(digits + 2)`` (the largest to that, not to 1), exactly, so
    that a term about ``eps`` times a KL at the bottom of the normal range is itself normal:
    its rounding is then relative (and not flushed to 0 on JAX and CuPy).  The KL, a ratio
    of sums of weights, does not change."""
    finfo = xp.finfo(dtype)
    return 2.0 ** (round(-math.log2(float(finfo.eps))) + 3)


def _largest(dtype: Any, xp: Any) -> float:
    return float(xp.finfo(dtype).max)


def _p_floor(dtype: Any, xp: Any) -> float:
    """A distance below p's largest logit where its weight is 0 in every precision:
    ``e**-128`` and ``e**-1024`` underflow float32 and float64.  A p-logit raised to it
    keeps a weight of 0, and every term of a zero weight is independent of its ``v``."""
    return 1024.0 if dtype == xp.float64 else 128.0


def _q_floor(dtype: Any, xp: Any) -> float:
    """q's logits are kept unless they lie ``2**(maxexp - digits - 5)`` below q's largest
    (about ``6e29`` in float32, ``2e291`` in float64), where a scaled weight times ``v``
    would overflow; beyond, the KL is that of logits at this distance."""
    finfo = xp.finfo(dtype)
    digits = round(-math.log2(float(finfo.eps))) + 1
    return 2.0 ** (math.frexp(_largest(dtype, xp))[1] - digits - 5)


def _probability_support(probs: Any, xp: Any) -> tuple[Any, Any]:
    """The 0/1 support ``probs > 0``, and a term that is 0, or NaN for a negative, infinite
    or NaN probability."""
    support = mask(probs > 0, probs.dtype, xp)
    return support, (0.0 * probs) / mask(probs >= 0, probs.dtype, xp)


def _probability_words(probs: Any, xp: Any) -> tuple[Any, Any, Any, Any, Any]:
    """``log(probs / max(probs))`` as an exact double word ``(hi, lo)`` (0 where the
    probability is 0), the 0/1 support ``probs > 0``, and a term that is 0, or NaN for a
    negative, infinite or NaN probability.

    Both logs come from :func:`~kullback._double_word.log_words`, in three words: never
    rounded (a backend's float32 ``log`` is up to 3.8 ulp off), so that against logits
    normalized the same way (to their largest) the difference ``v`` is exact where the
    two are close, as between two sets of logits.
    """
    support, domain = _probability_support(probs, xp)
    bounded = _namespace.clip(probs, None, _largest(probs.dtype, xp), xp)
    words = log_words(bounded + (1.0 - support), xp)
    top = xp.max(bounded, axis=-1, keepdims=True)
    top_words = log_words(top + mask(top <= 0, top.dtype, xp), xp)
    hi, lo = _two_sum(words[0], -top_words[0])
    lo = lo + ((words[1] - top_words[1]) + (words[2] - top_words[2]))
    # the weights in the same units: probs / max(probs), scaled (see _weight_scale)
    weights = probs * (_weight_scale(probs.dtype, xp) / (top + mask(top <= 0, top.dtype, xp)))
    return hi * support, lo * support, weights, support, domain


def _probs_ratio(probs_p: Any, probs_q: Any, in_p: Any, in_q: Any, xp: Any) -> tuple[Any, Any]:
    """``log(Q/P)`` as ``hi + lo``: by the series where ``P/2 <= Q <= 2P`` (no backend
    ``log``), else the ``log`` of the quotient (rounded once; ``|log| >= log 2`` there)."""
    safe_p = probs_p + (1.0 - in_p)
    safe_q = probs_q + (1.0 - in_q)
    near = mask((safe_q <= 2.0 * safe_p) & (safe_p <= 2.0 * safe_q), safe_p.dtype, xp)
    series_hi, series_lo = log_ratio_near_words(safe_q - safe_p, safe_q, safe_p, xp)
    quotient = _namespace.clip(safe_q / safe_p, None, _largest(safe_p.dtype, xp), xp)
    far = xp.log(quotient + near)  # log(Q/P + 1) where near: finite, unused
    return near * series_hi + (1.0 - near) * far, near * series_lo


@register_kl(Categorical, Categorical)
def _kl_categorical_categorical(p: Categorical, q: Categorical, *, xp: Any) -> Any:
    return _namespace.compiled(_categorical_kernel, xp)(p, q)


def _categorical_kernel(p: Categorical, q: Categorical, *, xp: Any) -> Any:
    def total(x: Any) -> Any:
        return pairwise_sum(x, xp)

    def largest(x: Any) -> Any:
        return xp.max(x, axis=-1)

    if p.probs is not None and q.probs is not None:
        in_p, domain = _probability_support(p.probs, xp)
        in_q, q_domain = _probability_support(q.probs, xp)
        domain = domain + q_domain
        scale = _weight_scale(p.probs.dtype, xp)
        weight_p, weight_q = p.probs * scale, q.probs * scale
        # from the scaled weights (an exact scaling): no subnormal difference Q - P for
        # JAX and CuPy to flush
        v = _probs_ratio(weight_p, weight_q, in_p, in_q, xp)
    else:
        domain = None
        if p.logits is not None:
            dtype = p.logits.dtype
            p_hi, p_lo, weight_p, in_p = _logit_words(p.logits, _p_floor(dtype, xp), xp)
        else:
            p_hi, p_lo, weight_p, in_p, domain = _probability_words(p.probs, xp)
        if q.logits is not None:
            dtype = q.logits.dtype
            q_hi, q_lo, weight_q, in_q = _logit_words(q.logits, _q_floor(dtype, xp), xp)
        else:
            q_hi, q_lo, weight_q, in_q, domain = _probability_words(q.probs, xp)
        v = (q_hi - p_hi, q_lo - p_lo)

    if domain is not None:
        # NaN for invalid probabilities; a row of q-probs summing to 0 is NaN too.
        weight_p = weight_p + domain
        if q.probs is not None:
            weight_p = weight_p + 0.0 * xp.expand_dims(1.0 / total(q.probs), axis=-1)
    return kl_from_weights(weight_p, weight_q, v, in_p, in_q, total, largest, xp)
