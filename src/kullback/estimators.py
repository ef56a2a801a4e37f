r"""Monte-Carlo estimators of ``KL(p || q)`` from the log-densities of samples of ``p``."""

from __future__ import annotations

from typing import Any

from . import _namespace, _reduction
from ._double_word import _two_sum
from .special import half_expm1mx

__all__ = ["sample_kl"]

ESTIMATORS = ("k1", "k2", "k3")


def sample_kl(
    log_p: Any,
    log_q: Any,
    *,
    estimator: str = "k3",
    axis: int | tuple[int, ...] | None = None,
    where: Any = None,
    reduction: str = "sum",
) -> Any:
    r"""Per-sample estimates of ``KL(p || q)`` from ``log p(x)`` and ``log q(x)``, ``x ~ p``.

    Parameters
    ----------
    log_p, log_q : array or float
        Log-densities (or log-probabilities, e.g. of the sampled tokens under the policy
        and the reference model) of the same samples, drawn from ``p``; they broadcast.
    estimator : {"k1", "k2", "k3"}
        With ``d = log_q - log_p`` (so that ``E_p[e**d] = 1``):

        * ``"k1"``: ``-d = log_p - log_q``.  Unbiased for the value; single samples are
          negative about half the time, and its variance is large.
        * ``"k2"``: ``d**2 / 2``.  Biased (its expectation is the KL only to second order
          in ``p - q``), never negative, low variance.
        * ``"k3"``: ``e**d - 1 - d``, computed as :func:`kullback.special.expm1mx` of the
          exact difference.  Unbiased (``E_p[e**d - 1] = 0``) and never negative, with low
          variance near ``p = q`` (Schulman 2020, "Approximating KL Divergence").
    axis : int or tuple of int, optional
        Axes to reduce (e.g. the tokens of a sequence).  By default nothing is reduced.
    where : boolean array, optional
        Entries where the mask is False contribute exactly 0 to the value and to every
        gradient, whatever ``log_p`` and ``log_q`` hold there (padding).
    reduction : {"sum", "mean"}
        The sum over ``axis``, or the mean over its unmasked entries (0 where there is none).

    Returns
    -------
    array
        The estimates, in the inputs' namespace, floating dtype and device (float16 and
        bfloat16 computed in float32).

    Notes
    -----
    Used as a loss, the *value* of an unbiased estimator is not what matters, its
    *gradient* is, and the samples come from ``p``, which is what is differentiated:
    differentiating the per-sample estimate through ``log_p`` (without the score-function
    term of the sampling) gives, in expectation, the gradient of ``E_p[k1]``: 0 for
    ``k1``; for ``k2`` the gradient of ``KL(p || q)`` (reverse KL); for ``k3`` that of the
    forward ``KL(q || p)``, not of ``KL(p || q)`` (Tang & Munos 2025, "On a few pitfalls
    in KL divergence gradient estimation for RL", arXiv:2506.09477; Liu et al. 2025,
    "Rethinking KL regularization in RLHF", arXiv:2510.01555).  ``k1`` as a reward
    penalty (not differentiated) is the REINFORCE-consistent choice.

    ``k1`` is one subtraction and ``k2`` one more rounding (at most 1 and 2 ulp).  ``k3``
    never cancels: ``d = hi + lo`` exactly (TwoSum), and
    ``e**d - 1 - d = expm1mx(hi) + lo (expm1mx(hi) + hi)`` to within ``lo**2``, so neither
    the rounding of ``d`` (amplified ``|d|`` times in ``e**d``) nor ``expm1(d) - d``
    (which loses every digit for small ``d``, and is negative a third of the time in
    float32) enters.  ``log_q = -inf`` gives ``+inf``.

    Examples
    --------
    >>> import numpy as np
    >>> import kullback as kb
    >>> log_p = np.array([-1.0, -2.0, -3.0], dtype=np.float32)
    >>> log_q = log_p + np.float32(1e-4)
    >>> kb.sample_kl(log_p, log_q)  # e**d - 1 - d for d near 1e-4 (as rounded): never < 0
    array([5.001826e-09, 5.001826e-09, 4.989910e-09], dtype=float32)
    >>> kb.sample_kl(log_p, log_q, estimator="k1", axis=0, reduction="mean")
    array(-9.997686e-05, dtype=float32)
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}; got {estimator!r}")
    _reduction.check_reduction(reduction)
    resolved = _namespace.resolve([("log_p", log_p), ("log_q", log_q)])
    xp = resolved.xp
    mask_array = _reduction.as_mask(where, resolved)
    log_p = resolved.asarray(log_p)
    log_q = resolved.asarray(log_q)
    if mask_array is not None:
        log_p = _reduction.mask_parameter(log_p, mask_array, 0.0, 0, xp)
        log_q = _reduction.mask_parameter(log_q, mask_array, 0.0, 0, xp)
    with _namespace.errstate(xp):
        if estimator == "k1":
            estimate = log_p - log_q
        elif estimator == "k2":
            difference = log_p - log_q
            estimate = (0.5 * difference) * difference
        else:
            estimate = _sliced_k3(log_p, log_q, resolved, xp)
        estimate = _reduction.reduce(
            estimate, axis=axis, mask=mask_array, reduction=reduction, xp=xp
        )
        # inside the errstate: a float32 estimate above float16's range rounds to +inf
        # there, which NumPy warns about
        return _namespace.finalize(resolved.result(estimate), xp)


def _sliced_k3(log_p: Any, log_q: Any, resolved: _namespace.Resolved, xp: Any) -> Any:
    """:func:`_k3`, on eager CPU backends in cache-sized slices along the leading axis (as
    :func:`kullback.kl_divergence` does: each of its operations is a pass over memory), on
    JAX as one compiled kernel."""
    bounds = _namespace.eager_slices(xp, resolved.device, resolved.shape)
    if bounds is None:
        return _namespace.compiled(_k3, xp)(log_p, log_q)
    log_p, log_q = xp.broadcast_arrays(log_p, log_q)
    pieces = [_k3(log_p[start:stop, ...], log_q[start:stop, ...], xp) for start, stop in bounds]
    return xp.concat(pieces, axis=0)


def _k3(log_p: Any, log_q: Any, xp: Any) -> Any:
    """``e**d - 1 - d``, ``d = log_q - log_p``, from the exact double word of ``d``.

    ``d/2 = hi/2 + lo/2`` is exact (TwoSum of the halved inputs, which cannot overflow;
    infinite inputs are first bounded by the largest float), so every finite pair of inputs
    is exact; ``hi`` is infinite where ``d`` is beyond the float range, and so is the
    estimate.  The correction ``lo (expm1mx(hi) + hi)`` uses ``lo`` bounded by 1 (it is
    at most ``2**-18`` wherever the estimate is finite) and ``expm1mx(hi)`` and ``hi``
    bounded by half the largest float, so that it is finite everywhere.  The unbounded
    difference settles infinite inputs: it is within the largest float of ``hi`` (bounded)
    where it is finite, and infinite (the estimate is ``+inf``) or NaN (infinities of the
    same sign, or a NaN) elsewhere, so that ``max(|d - hi|, largest) - largest`` is 0,
    ``+inf`` or NaN, with no gradient where it is 0.
    """
    largest = float(xp.finfo(log_p.dtype).max)
    half = 0.5 * largest
    half_hi, half_lo = _two_sum(
        0.5 * _namespace.clip(log_q, -largest, largest, xp),
        -0.5 * _namespace.clip(log_p, -largest, largest, xp),
    )
    hi = 2.0 * half_hi
    value = 2.0 * half_expm1mx(hi, xp)
    capped = _namespace.clip(value, None, half, xp)
    bounded = _namespace.clip(hi, -half, half, xp)
    lo = _namespace.clip(2.0 * half_lo, -1.0, 1.0, xp)
    estimate = value + lo * (capped + bounded)
    floor = xp.asarray(largest, dtype=hi.dtype, device=_namespace.device_of(hi))
    return estimate + (xp.maximum(xp.abs((log_q - log_p) - bounded), floor) - largest)
