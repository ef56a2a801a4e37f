"""mpmath references and input sweeps for the Categorical, Bernoulli and sample KLs.

Every float input is converted to an ``mpf`` exactly (``mpmath.mpf(float(x))``), so the
references are the KLs of the float inputs as given, not of the values they were drawn
from.  The KL of a row is evaluated in the cancellation-free form

    KL(p || q) = sum_{p_i > 0} p_i (e**r_i - 1 - r_i) + sum_{p_i = 0} q_i,
    r_i = log q_i - log p_i,

where each term is >= 0, with ``r_i`` formed from differences of the inputs relative to
one reference category (so that identical rows, rows shifted by an exactly representable
constant and probabilities scaled by a power of 2 give an exact 0).  The working precision
is raised until the absolute error bound of the sum is below ``10**-DIGITS`` times the KL
(a row whose KL is 1e-32 is evaluated with about 95 digits), so every finite nonzero
reference carries at least ``DIGITS`` correct significant digits.

The references of the categorical sweeps of ``K`` in ``CACHED_K`` (1000: 1-2 s per sweep
to compute, 50000: about 40 s) are cached in ``tests/reference/data/`` by
``tools/make_categorical_references.py``; the others (K <= 100) are computed when the tests
run (under 0.2 s each).  A cache entry is used only if it matches a SHA-256 hash of the
regenerated inputs (and of ``REFERENCE_VERSION``); otherwise the references are recomputed.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import mpmath
import numpy as np

from tests.reference.normal import DIGITS, ulp_errors

__all__ = [
    "CACHED_K",
    "DIGITS",
    "PARAMETERIZATIONS",
    "KLSweep",
    "SampleSweep",
    "SweepScales",
    "bernoulli_sweep",
    "categorical_sweep",
    "compute_categorical_references",
    "fisher_information",
    "keeps_subnormals",
    "kl_bernoulli",
    "kl_categorical",
    "kl_categorical_gradient",
    "mixed_allowance_ulps",
    "sample_k1",
    "sample_k2",
    "sample_k3",
    "sample_kl_sweep",
    "sweep_scales",
    "ulp_errors",
    "working_dtype_name",
]

PARAMETERIZATIONS = ("logits-logits", "probs-probs", "logits-probs", "probs-logits")
CACHED_K = (1000, 50000)  # the sweeps whose references are read from tests/reference/data/
DATA = Path(__file__).parent / "data"
REFERENCE_VERSION = 1  # part of the cache hash: bump when the references change
_MAX_DIGITS = 5000

_INF = mpmath.inf
_NAN = mpmath.nan


def _exact(x):
    """An mpf equal to ``x``: floats are converted without rounding, mpf kept as they are."""
    return x if isinstance(x, mpmath.mpf) else mpmath.mpf(float(x))


def working_dtype_name(dtype_name):
    """The dtype kullback computes in for inputs of ``dtype_name``: float32 for the half
    dtypes (float16, bfloat16), whose results are the float32 result rounded once."""
    return "float32" if ml_dtypes.finfo(np.dtype(dtype_name)).bits < 32 else dtype_name


def keeps_subnormals(dtype_name):
    """True where the dtype's subnormals are normal numbers of its working dtype (float16 in
    float32): its subnormal inputs and results then meet no flushing on any backend (JAX
    and CuPy flush only subnormals of the dtype they compute in)."""
    info = ml_dtypes.finfo(np.dtype(dtype_name))
    work = ml_dtypes.finfo(np.dtype(working_dtype_name(dtype_name)))
    return info.minexp > work.minexp


# --------------------------------------------------------------------------------------
# Categorical
# --------------------------------------------------------------------------------------


def _side(name, logits, probs):
    """``(kind, values, positive)`` for one side, or None where the KL is NaN."""
    if (logits is None) == (probs is None):
        raise TypeError(f"give exactly one of {name}_logits and {name}_probs")
    kind = "logits" if probs is None else "probs"
    values = [_exact(x) for x in (logits if probs is None else probs)]
    if kind == "logits":
        if any(mpmath.isnan(v) or v == _INF for v in values):
            return None
        positive = [v != -_INF for v in values]
    else:
        if any(mpmath.isnan(v) or v < 0 or v == _INF for v in values):
            return None
        positive = [v > 0 for v in values]
    if not any(positive):  # all logits -inf, or probabilities summing to 0
        return None
    return kind, values, positive


@dataclass
class _Row:
    """Exact pieces of one row: KL, normalized p and q, and r_i = log q_i - log p_i."""

    kl: object
    p: list | None = None
    q: list | None = None
    r: list | None = None  # None where p_i = 0


def _float_log(kind, v):
    """A float estimate of the log-weight (only used to guess the working precision)."""
    v = float(v)
    return v if kind == "logits" else math.log(v) if v > 0 else -math.inf


def _row(p_side, q_side, *, pieces=False):
    """The KL of one row (p and q already validated and of positive mass)."""
    p_kind, pv, p_pos = p_side
    q_kind, qv, q_pos = q_side
    if len(pv) != len(qv):
        raise ValueError(f"rows of different lengths: {len(pv)} (p) and {len(qv)} (q)")
    if any(pp and not qq for pp, qq in zip(p_pos, q_pos, strict=True)):
        return _Row(_INF)  # q_i = 0 < p_i
    support = [i for i, pp in enumerate(p_pos) if pp]
    extra = [i for i, (pp, qq) in enumerate(zip(p_pos, q_pos, strict=True)) if qq and not pp]
    k = max(support, key=lambda i: pv[i])  # the most probable category of p
    # Guess the precision from the float spread of d_i = log-weight(q) - log-weight(p).
    fd = [_float_log(q_kind, qv[i]) - _float_log(p_kind, pv[i]) for i in support]
    fk = fd[support.index(k)]
    spread = max(abs(x - fk) for x in fd)
    scale = 1 + max(abs(x) for x in fd)
    dps = DIGITS + 8 + math.ceil(math.log10(len(pv) * scale))
    if 0 < spread < 1:
        dps += 2 * math.ceil(-math.log10(spread))
    while True:
        result, needed = _row_at(p_side, q_side, support, extra, k, dps, pieces)
        if needed is None or dps >= needed:
            return result
        dps = max(needed + 5, dps + 10)
        if dps > _MAX_DIGITS:
            raise ArithmeticError("the KL reference did not converge")


def _row_at(p_side, q_side, support, extra, k, dps, pieces):
    """One evaluation at ``dps`` digits: (result, digits needed or None if exact)."""
    p_kind, pv, _ = p_side
    q_kind, qv, _ = q_side
    with mpmath.workdps(dps):
        # log-weights relative to category k: w_i = p_i / p_k
        if p_kind == "logits":
            w = [mpmath.exp(mpmath.fsub(pv[i], pv[k], exact=True)) for i in support]
        else:
            w = [pv[i] / pv[k] for i in support]
        # d_i = log-weight of q minus log-weight of p (exact for logits against logits)
        if p_kind == "logits" and q_kind == "logits":
            d = [mpmath.fsub(qv[i], pv[i], exact=True) for i in support]
        elif p_kind == "probs" and q_kind == "probs":
            d = [mpmath.log(qv[i] / pv[i]) for i in support]
        elif p_kind == "logits":
            d = [mpmath.log(qv[i]) - pv[i] for i in support]
        else:
            d = [qv[i] - mpmath.log(pv[i]) for i in support]
        dk = d[support.index(k)]
        delta = [mpmath.fsub(x, dk, exact=True) for x in d]
        e = [mpmath.exp(x) for x in delta]  # (q_i / q_k) / (p_i / p_k)
        if q_kind == "logits":  # q_j / q_k where p_j = 0
            t = [mpmath.exp(mpmath.fsub(qv[j], qv[k], exact=True)) for j in extra]
        else:
            t = [qv[j] / qv[k] for j in extra]
        s = mpmath.fsum(w)
        t1 = mpmath.fsum(wi * ei for wi, ei in zip(w, e, strict=True))
        t0 = mpmath.fsum(t)
        total = t1 + t0
        ratio = s / total
        log_ratio = mpmath.log(ratio)  # -(log normalizer of q - log normalizer of p)
        r = [x + log_ratio for x in delta]
        kl = (
            mpmath.fsum(wi * (ei * ratio - 1 - ri) for wi, ei, ri in zip(w, e, r, strict=True)) / s
            + t0 / total
        )
        exact_zero = t0 == 0 and all(x == 0 for x in delta)
        if exact_zero:
            needed = None
        elif kl > 0:
            bound = 10 * (1 + max(abs(x) for x in r) + max(abs(x) for x in d)) * len(w)
            needed = DIGITS + math.ceil(float(mpmath.log10(bound / kl)))
        else:
            needed = 2 * dps
        row = _Row(+kl)
        if pieces:
            n = len(pv)
            row.p, row.q, row.r = [mpmath.mpf(0)] * n, [mpmath.mpf(0)] * n, [None] * n
            for i, wi, ei, ri in zip(support, w, e, r, strict=True):
                row.p[i] = wi / s
                row.q[i] = wi * ei / total
                row.r[i] = ri
            for j, tj in zip(extra, t, strict=True):
                row.q[j] = tj / total
    return row, needed


def kl_categorical(p_logits=None, p_probs=None, q_logits=None, q_probs=None):
    """KL(p || q) of one row of categories, in mpmath, from the exact float inputs.

    Each side is given by unnormalized ``logits`` (``p_i = exp(a_i) / sum exp(a)``; a
    logit of -inf is a probability 0; +inf or NaN gives NaN; all -inf gives NaN) or by
    ``probs`` (non-negative, normalized by their sum; a sum of 0, a negative, infinite or
    NaN entry gives NaN).  Terms with ``p_i = 0`` contribute 0 (also where ``q_i = 0``);
    ``q_i = 0 < p_i`` gives +inf.  Returns an mpf, ``mpmath.inf`` or ``mpmath.nan``.
    """
    p = _side("p", p_logits, p_probs)
    q = _side("q", q_logits, q_probs)
    if p is None or q is None:
        return _NAN
    return _row(p, q).kl


def _bernoulli_side(name, logit, prob):
    if (logit is None) == (prob is None):
        raise TypeError(f"give exactly one of {name}_logit and {name}_prob")
    if logit is not None:
        return {"logits": (0.0, logit)}
    x = _exact(prob)
    one_minus = mpmath.nan if mpmath.isnan(x) else mpmath.fsub(1, x, exact=True)
    return {"probs": (one_minus, x)}


def kl_bernoulli(p_logit=None, p_prob=None, q_logit=None, q_prob=None):
    """KL(Bernoulli(p) || Bernoulli(q)) of one element: :func:`kl_categorical` of the
    logits ``(0, x)`` or the probabilities ``(1 - prob, prob)``, with ``1 - prob`` exact.

    So a prob outside [0, 1] and a logit of +inf or NaN give NaN (by the categorical rules),
    a logit of -inf is a probability 0, and probabilities 0 and 1 follow the rules for zeros.
    """
    p = _bernoulli_side("p", p_logit, p_prob)
    q = _bernoulli_side("q", q_logit, q_prob)
    return kl_categorical(
        **{f"p_{k}": v for k, v in p.items()}, **{f"q_{k}": v for k, v in q.items()}
    )


def mixed_allowance_ulps(dtype_name, p_logits=None, p_probs=None, q_logits=None, q_probs=None):
    """The error, in ulp of the KL in ``dtype_name``, that one rounding of ``log P_i`` per
    category of each side given by probabilities already implies (first order).

    An implementation that takes logits on one side and probabilities on the other must
    form ``log P_i`` in the dtype; a relative error of ``eps/2`` in ``P_i`` is an absolute
    error ``|log P_i| eps/2`` in it (the rounding of the log itself), which moves the KL by
    ``|dKL/dlog P_i| |log P_i| eps/2``.  With the normalization included,

    - p given by probabilities: ``dKL/dlog P_i = p_i (log(p_i/q_i) - KL)``,
    - q given by probabilities: ``dKL/dlog Q_i = q_i - p_i``,

    (a rounding of the log of the sum is harmless: these derivatives sum to 0).  Returns
    ``sum_i |dKL/dlog P_i| |log P_i| (eps/2) / ulp(KL)`` over every side given by
    probabilities (the sweeps apply it to mixed rows only, where ``log(P_i/Q_i)`` cannot be
    formed as one quotient), and 0 where the KL is 0, infinite or NaN.  ``ulp(KL)`` is the
    unit of :func:`ulp_errors`.

    float16 and bfloat16 are computed in float32 (:func:`working_dtype_name`): their
    ``log P_i`` is rounded in float32, so ``eps`` is float32's while ``ulp(KL)`` is the
    half dtype's (the float32 allowance times ``eps(float32)/eps(half)``).
    """
    p = _side("p", p_logits, p_probs)
    q = _side("q", q_logits, q_probs)
    if p is None or q is None:
        return 0.0
    return _allowance(dtype_name, p, q, _row(p, q, pieces=True))


def _abs_log(value):
    x = float(value)
    return abs(math.log(x)) if x != 1.0 else abs(float(mpmath.log(value)))


def _allowance(dtype_name, p_side, q_side, row):
    """:func:`mixed_allowance_ulps` from the pieces of a row (in float64: it is a bound)."""
    kl = row.kl
    if not mpmath.isfinite(kl) or kl == 0:
        return 0.0
    info = ml_dtypes.finfo(np.dtype(dtype_name))
    # the log is rounded in the working dtype (float32 for the half dtypes)
    work = ml_dtypes.finfo(np.dtype(working_dtype_name(dtype_name)))
    exponent = max(int(mpmath.floor(mpmath.log(kl, 2))), int(info.minexp)) - info.nmant
    total = 0.0
    if p_side[0] == "probs":
        for value, pi, ri in zip(p_side[1], row.p, row.r, strict=True):
            if ri is not None:  # |p_i (log(p_i/q_i) - KL)|
                total += float(abs(pi * (ri + kl))) * _abs_log(value)
    if q_side[0] == "probs":
        for value, pi, qi, ri in zip(q_side[1], row.p, row.q, row.r, strict=True):
            if value > 0:  # |q_i - p_i| = |p_i expm1(r_i)|, or q_i where p_i = 0
                g = float(qi) if ri is None else float(pi) * abs(math.expm1(float(ri)))
                total += g * _abs_log(value)
    # eps/2 = 2**-(nmant + 1) of the working dtype and ulp(KL) = 2**exponent in the dtype,
    # as in ulp_errors
    return math.ldexp(total, -(work.nmant + 1) - exponent)


def kl_categorical_gradient(a, b):
    """``(dKL/da, dKL/db)`` of KL(softmax(a) || softmax(b)) as float64 arrays (mpmath).

    ``dKL/da_j = p_j (log(p_j/q_j) - KL)`` and ``dKL/db_j = q_j - p_j``; 0 where the
    probabilities are 0.  The KL must be finite.
    """
    p = _side("p", a, None)
    q = _side("q", b, None)
    if p is None or q is None:
        raise ValueError("the KL is NaN for these logits")
    row = _row(p, q, pieces=True)
    if not mpmath.isfinite(row.kl):
        raise ValueError("the KL is infinite for these logits")
    with mpmath.workdps(DIGITS):
        grad_a = [
            0.0 if ri is None else float(pi * (-ri - row.kl))
            for pi, ri in zip(row.p, row.r, strict=True)
        ]
        grad_b = [
            float(-pi if qi == 0 else qi if ri is None else pi * mpmath.expm1(ri))
            for pi, qi, ri in zip(row.p, row.q, row.r, strict=True)
        ]  # q - p = p (e**r - 1), without cancellation
    return np.array(grad_a), np.array(grad_b)


def fisher_information(logits):
    """``diag(p) - p p^T`` for ``p = softmax(logits)`` as a float64 array (mpmath).

    The Hessian of KL(softmax(a) || softmax(b)) in b, and of log-sum-exp.  The diagonal
    ``p_i (1 - p_i)`` takes ``1 - p_i`` as the sum of the other probabilities (no
    cancellation where ``p_i`` is near 1).
    """
    side = _side("p", logits, None)
    if side is None:
        raise ValueError("the logits are not a distribution")
    _, values, positive = side
    n = len(values)
    with mpmath.workdps(DIGITS):
        top = max(values)
        w = [
            mpmath.exp(v - top) if pos else mpmath.mpf(0)
            for v, pos in zip(values, positive, strict=True)
        ]
        s = mpmath.fsum(w)
        p = [x / s for x in w]
        prefix = [mpmath.mpf(0)]
        for x in w:
            prefix.append(prefix[-1] + x)
        suffix = [mpmath.mpf(0)]
        for x in reversed(w):
            suffix.append(suffix[-1] + x)
        suffix.reverse()
        out = np.empty((n, n))
        for i in range(n):
            for j in range(n):
                out[i, j] = float(-p[i] * p[j])
            out[i, i] = float(p[i] * (prefix[i] + suffix[i + 1]) / s)
    return out


# --------------------------------------------------------------------------------------
# Sample estimators (Schulman's k1, k2, k3 of samples drawn from p)
# --------------------------------------------------------------------------------------


def _log_ratio(log_p, log_q):
    """``log_q - log_p`` exactly, or None for an infinite result; NaN propagates."""
    lp, lq = _exact(log_p), _exact(log_q)
    if mpmath.isnan(lp) or mpmath.isnan(lq) or lp == _INF or lq == _INF or lp == -_INF:
        return _NAN
    if lq == -_INF:
        return None
    return mpmath.fsub(lq, lp, exact=True)


def sample_k1(log_p, log_q):
    """``log_p - log_q`` (exact); +inf where ``log_q = -inf``.  NaN where either is NaN or
    +inf, or where ``log_p = -inf`` (a sample that p cannot draw)."""
    x = _log_ratio(log_p, log_q)
    return _INF if x is None else -x


def sample_k2(log_p, log_q):
    """``(log_p - log_q)**2 / 2``; the special values of :func:`sample_k1`."""
    x = _log_ratio(log_p, log_q)
    if x is None:
        return _INF
    with mpmath.workdps(DIGITS):
        return x * x / 2


def sample_k3(log_p, log_q):
    """``e**x - 1 - x`` for ``x = log_q - log_p`` (>= 0), with the digits the cancellation
    takes carried (as :func:`tests.reference.normal.expm1mx`); +inf where
    ``log_q = -inf``, NaN as for :func:`sample_k1`."""
    x = _log_ratio(log_p, log_q)
    if x is None:
        return _INF
    if mpmath.isnan(x):
        return _NAN
    # as tests.reference.normal.expm1mx, without rounding x (the exact difference of two
    # floats can take more than 53 bits)
    extra = 0 if x == 0 or abs(x) >= 1 else int(-mpmath.log10(abs(x))) + 1
    with mpmath.workdps(DIGITS + extra):
        return mpmath.expm1(x) - x


# --------------------------------------------------------------------------------------
# Sweeps
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KLSweep:
    """Inputs (NumPy arrays of the target dtype) and exact KLs, one per row.

    ``p`` and ``q`` have shape ``(rows, K)`` (categorical) or ``(rows,)`` (Bernoulli) and
    hold logits or probabilities as ``p_by``/``q_by`` say ("logits" or "probs").
    ``allowance`` (float64, ulp) is :func:`mixed_allowance_ulps` for mixed rows and 0 for
    the others; ``labels`` name the construction of each row.
    """

    p: np.ndarray
    q: np.ndarray
    p_by: str
    q_by: str
    exact: tuple
    allowance: np.ndarray
    labels: tuple

    def kwargs(self, convert):
        """``({name: convert(p)}, {name: convert(q)})``, e.g. ``({"logits": ...}, ...)``."""
        return {self.p_by: convert(self.p)}, {self.q_by: convert(self.q)}


def _sides(parameterization):
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(
            f"parameterization {parameterization!r}; expected one of {PARAMETERIZATIONS}"
        )
    return tuple(parameterization.split("-"))


def _softmax(a):
    with np.errstate(all="ignore"):
        e = np.exp(a - np.max(a))
    return e / e.sum()


def _floor(dtype):
    """The smallest positive probability a sweep of the dtype holds: the smallest normal
    (JAX and CuPy flush subnormals of the dtype they compute in), or for float16, whose
    subnormals are normal in float32 (:func:`keeps_subnormals`), the smallest subnormal."""
    info = ml_dtypes.finfo(dtype)
    return info.smallest_subnormal if keeps_subnormals(np.dtype(dtype).name) else info.tiny


def _cast_probs(p64, q64, dtype, both):
    """Probabilities in the dtype, none below :func:`_floor` but 0: where a probability that
    is positive in float64 is below the floor after rounding, it becomes 0 if the other
    side's is too (``both``), else the floor.  Zeros of float64 (from -inf logits) stay."""
    floor = _floor(dtype)
    p, q = p64.astype(dtype), q64.astype(dtype)
    small_p, small_q = (p64 > 0) & (p < floor), (q64 > 0) & (q < floor)
    if both:
        zero = (p < floor) & (q < floor) & ((p64 > 0) | (q64 > 0))
        p[zero], q[zero] = 0, 0
        small_p &= ~zero
        small_q &= ~zero
    p[small_p] = floor
    q[small_q] = floor
    return p, q


@dataclass(frozen=True)
class SweepScales:
    """The sizes of a sweep's differences and offsets in one dtype.

    float32 and float64 keep the sizes the sweeps were written with.  In the half dtypes
    (eps 2**-10 and 2**-7) differences of 1e-8 or 1e-6 round away and leave equal pairs,
    so there the near-equal differences are multiples of eps (from eps/4 to 64 eps), the
    perturbations of logits near -85 and -100 about an ulp there, and the large common
    shift ``2**(digits - 5)`` with differences of 1/16 on top (about an ulp of the
    shifted logits: still a near-equal pair after rounding).  float16's "one logit far
    above the others" is 10 above (not 80): its KL then lies from float16's subnormals up
    to its normal range (80 gives 1e-36, which rounds to 0).
    """

    near: tuple  # near-equal differences (then 1 and 10)
    shift: float  # the large common shift ...
    shift_noise: float  # ... and the differences on top of it
    noise: float  # differences in the rows with -inf logits
    top: float  # the logit far above the others
    low_noise: float  # differences of the logits near -85 and below -100
    grid: float  # the spacing of the "exact shift +2" logits
    grid_bound: float  # ... and their largest magnitude (a + 2 must be exact)
    probs_noise: tuple  # Q = P (1 + eps z)
    delta: float  # P = (1 + delta, 1, ...)
    bernoulli_diffs: tuple  # Bernoulli near-equal logit differences (then 1 and 10)
    smallest_diff: float  # the smallest random difference of logits (Bernoulli, k3)
    lowest: int  # log10 of the smallest Bernoulli probability drawn
    digits: int  # log10 of the smallest relative difference of Bernoulli probabilities
    sample_grid: tuple  # |log_q - log_p| of the sample estimators (then 0.5 ... 80)


def sweep_scales(dtype_name):
    """The :class:`SweepScales` of the sweeps in ``dtype_name``."""
    info = ml_dtypes.finfo(np.dtype(dtype_name))
    if info.bits >= 32:
        float64 = info.bits == 64
        return SweepScales(
            near=(1e-8, 1e-6, 1e-4, 1e-2), shift=100.0, shift_noise=1e-6, noise=1e-3,
            top=80.0, low_noise=1e-3, grid=2.0**-10, grid_bound=math.inf,
            probs_noise=(1e-7, 1e-3), delta=1e-9 if float64 else 1e-6,
            bernoulli_diffs=(1e-8, 1e-6, 1e-4, 1e-2), smallest_diff=1e-8,
            lowest=-300 if float64 else -30, digits=16 if float64 else 7,
            sample_grid=(1e-12, 1e-8, 1e-4, 1e-2),
        )  # fmt: skip
    eps = float(info.eps)
    float32_range = not keeps_subnormals(dtype_name)  # bfloat16: float32's exponents
    return SweepScales(
        near=(eps / 4, eps, 8 * eps, 64 * eps), shift=2.0 ** (info.nmant - 4),
        shift_noise=1 / 16, noise=4 * eps, top=80.0 if float32_range else 10.0,
        low_noise=64 * eps, grid=2.0 ** (5 - info.nmant), grid_bound=61.0,
        probs_noise=(eps, 16 * eps), delta=16 * eps,
        bernoulli_diffs=(eps / 4, eps, 8 * eps, 64 * eps), smallest_diff=eps / 4,
        lowest=-30 if float32_range else -7, digits=round(-math.log10(eps)),
        sample_grid=(eps / 64, eps / 4, eps, 16 * eps),
    )  # fmt: skip


def _logit_rows(rng, K, scales):
    """``(label, a, b, large_k)`` rows of float64 logits (before rounding to the dtype);
    ``large_k`` marks the rows kept for K > 1000."""
    rows = []
    for sigma in (1, 5, 20):
        a = rng.normal(0, sigma, K)
        for i, eps in enumerate((0, *scales.near, 1, 10)):
            large_k = (sigma, i) in ((5, 0), (1, 2), (20, 4))
            rows.append((f"sigma={sigma} eps={eps:g}", a, a + eps * rng.normal(size=K), large_k))
        rows.append((f"sigma={sigma} independent", a, rng.normal(0, sigma, K), False))
    for sigma in (1, 20):
        a = rng.normal(0, sigma, K)
        b = a + scales.shift + scales.shift_noise * rng.normal(size=K)
        rows.append((f"shift {scales.shift:g} sigma={sigma}", a, b, sigma == 1))
    # a + 2 exact in the dtype
    a = np.clip(np.round(rng.normal(0, 5, K) / scales.grid) * scales.grid, -scales.grid_bound,
                scales.grid_bound)  # fmt: skip
    rows.append(("exact shift +2", a, a + 2.0, False))
    n_inf = max(1, K // 3)
    for where in ("both", "p", "q"):
        a = rng.normal(0, 3, K)
        b = a + scales.noise * rng.normal(size=K)
        mask = rng.choice(K, n_inf, replace=False)
        if where != "q":
            a[mask] = -np.inf
        if where != "p":
            b[mask] = -np.inf
        rows.append((f"-inf in {where}", a, b, where == "p"))
    a = rng.normal(0, 1, K)
    a[rng.integers(K)] += scales.top
    # eps = 0.03: a KL of 1e-38 to 1e-35 (top 80), above float32's smallest normal
    rows.append((f"one logit +{scales.top:g}, eps=0.03", a, a + 3e-2 * rng.normal(size=K), True))
    b = rng.normal(0, 1, K)
    b[rng.integers(K)] += scales.top
    rows.append((f"one logit +{scales.top:g}, independent", a, b, False))
    a = rng.normal(-85, 3, K)
    label = f"near -85, eps={scales.low_noise:g}"
    rows.append((label, a, a + scales.low_noise * rng.normal(size=K), False))
    a = -100 - np.abs(rng.normal(0, 5, K))
    a[rng.integers(K)] = 0.0
    label = f"one at 0, others below -100, eps={scales.low_noise:g}"
    rows.append((label, a, a + scales.low_noise * rng.normal(size=K), False))
    return rows


def _categorical_inputs(dtype_name, K, parameterization, seed=0):
    """``(p, q, labels)``: the rows of :func:`categorical_sweep`, in the dtype."""
    p_by, q_by = _sides(parameterization)
    dtype = np.dtype(dtype_name).type
    scales = sweep_scales(dtype_name)
    rng = np.random.default_rng(
        [seed, K, PARAMETERIZATIONS.index(parameterization), np.dtype(dtype_name).itemsize]
    )
    rows = _logit_rows(rng, K, scales)
    extra = []  # rows defined by probabilities
    if "probs" in (p_by, q_by):
        a = rng.normal(0, 5, K)
        P = _softmax(a)
        for eps in scales.probs_noise:
            extra.append((f"Q = P(1 + {eps:g} z)", P, P * (1 + eps * rng.normal(size=K))))
        if p_by == q_by:
            extra.append(("Q = 2P", P, None))  # twice P as rounded, exactly
        P = np.ones(K)
        P[0] += scales.delta
        extra.append((f"P = (1 + {scales.delta:g}, 1, ...), Q = 1", P, np.ones(K)))
    if K > 1000:
        rows = [row for row in rows if row[3]]
        extra = extra[:1]
    p_rows, q_rows, labels = [], [], []
    with np.errstate(all="ignore"):
        for label, a, b, _ in rows:
            if p_by == "logits" and q_by == "logits":
                p, q = a.astype(dtype), b.astype(dtype)
            elif p_by == "probs" and q_by == "probs":
                p, q = _cast_probs(_softmax(a), _softmax(b), dtype, both=True)
            elif p_by == "logits":
                p = a.astype(dtype)
                q = _cast_probs(_softmax(b), _softmax(b), dtype, both=False)[1]
            else:
                p = _cast_probs(_softmax(a), _softmax(a), dtype, both=False)[0]
                q = b.astype(dtype)
            p_rows.append(p)
            q_rows.append(q)
            labels.append(label)
        for label, P, Q in extra:
            if Q is None:
                p = _cast_probs(P, P, dtype, both=True)[0]
                q = p * dtype(2)
            elif p_by == "probs" and q_by == "probs":
                p, q = _cast_probs(P, Q, dtype, both=True)
            elif p_by == "logits":
                p = np.log(P).astype(dtype)
                q = _cast_probs(Q, Q, dtype, both=False)[1]
            else:
                p = _cast_probs(P, P, dtype, both=False)[0]
                q = np.log(Q).astype(dtype)
            p_rows.append(p)
            q_rows.append(q)
            labels.append(label)
    return np.stack(p_rows), np.stack(q_rows), tuple(labels)


def _without_subnormal_kls(sweep):
    """The sweep less its rows whose exact KL rounds to a subnormal of the dtype (JAX and
    CuPy flush those to 0; a KL below half the smallest subnormal rounds to 0 and stays).
    float16 keeps them: they are the rounding of normal float32 results."""
    name = sweep.p.dtype.name
    if keeps_subnormals(name):
        return sweep
    info = ml_dtypes.finfo(sweep.p.dtype)
    low = mpmath.mpf(2) ** (info.minexp - info.nmant - 1)
    keep = [not (low <= x < info.tiny) for x in sweep.exact]
    if all(keep):
        return sweep
    rows = np.flatnonzero(keep)
    return KLSweep(
        sweep.p[rows], sweep.q[rows], sweep.p_by, sweep.q_by,
        tuple(sweep.exact[i] for i in rows), sweep.allowance[rows],
        tuple(sweep.labels[i] for i in rows),
    )  # fmt: skip


def _references(p, q, p_by, q_by, dtype_name, mixed):
    exact, allowance = [], []
    for p_row, q_row in zip(p.tolist(), q.tolist(), strict=True):
        p_side = _side("p", *((p_row, None) if p_by == "logits" else (None, p_row)))
        q_side = _side("q", *((q_row, None) if q_by == "logits" else (None, q_row)))
        if p_side is None or q_side is None:
            exact.append(_NAN)
            allowance.append(0.0)
            continue
        row = _row(p_side, q_side, pieces=mixed)
        exact.append(row.kl)
        allowance.append(_allowance(dtype_name, p_side, q_side, row) if mixed else 0.0)
    return exact, np.array(allowance)


def _input_hash(dtype_name, K, parameterization, p, q):
    h = hashlib.sha256()
    h.update(f"{REFERENCE_VERSION} {DIGITS} {dtype_name} {K} {parameterization}".encode())
    for x in (p, q):
        h.update(repr(x.shape).encode())
        h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()


def cache_path(K):
    return DATA / f"categorical_K{K}.npz"


def compute_categorical_references(dtype_name, K, parameterization):
    """``(input_hash, exact strings, allowance)`` for one sweep, computed (for the cache)."""
    p_by, q_by = _sides(parameterization)
    p, q, _ = _categorical_inputs(dtype_name, K, parameterization)
    exact, allowance = _references(p, q, p_by, q_by, dtype_name, p_by != q_by)
    strings = [mpmath.nstr(x, DIGITS, min_fixed=1, max_fixed=0) for x in exact]
    return _input_hash(dtype_name, K, parameterization, p, q), strings, allowance


def _load_cached(dtype_name, K, parameterization, digest):
    path = cache_path(K)
    if K not in CACHED_K or not path.exists():
        return None
    key = f"{dtype_name}_{parameterization}"
    with np.load(path, allow_pickle=False) as data:
        if f"{key}_hash" not in data or str(data[f"{key}_hash"]) != digest:
            return None
        with mpmath.workdps(DIGITS):
            exact = [mpmath.mpf(s) for s in data[f"{key}_exact"].tolist()]
        return exact, np.array(data[f"{key}_allowance"], dtype=np.float64)


@functools.cache
def categorical_sweep(dtype_name: str, K: int, parameterization: str) -> KLSweep:
    """Rows of K categories for one parameterization ("logits-logits", "probs-probs",
    "logits-probs" or "probs-logits", p first).

    Logit rows (34 for K <= 1000): ``a ~ N(0, sigma)``, sigma in {1, 5, 20}, against
    ``b = a + eps z`` for eps in {0, 1e-8, 1e-6, 1e-4, 1e-2, 1, 10} and against an
    independent ``b``; ``b = a + 100 + 1e-6 z``; ``b = a + 2`` (exact, KL 0); -inf logits
    in both (a third of the categories), in p only (mass of q where p = 0) or in q only
    (KL +inf); one logit 80 above the others (against ``b = a + 0.03 z`` and an
    independent ``b``); logits ``N(-85, 3)`` (``exp(a)`` partly below float32's smallest
    normal); one logit at 0 and the others below -100.  Probabilities are the
    float64 softmax of these logits rounded to the dtype (not renormalized), with
    probabilities positive in float64 that round below the smallest normal set to 0 (both
    sides, probs-probs) or to the smallest normal.  Rows of probabilities (with probs on
    either side): ``Q = P(1 + eps z)`` (not normalized, eps 1e-7 and 1e-3), ``Q = 2P``
    (KL 0, probs-probs), and ``P = (1 + delta, 1, ...)`` against ``Q = (1, ...)`` with
    delta = 1e-9 (float64) or 1e-6 (float32); the logits side of a mixed row is
    ``log P`` (or ``log Q``) rounded.  For K > 1000 six logit rows and one probability row
    are kept.  Rows whose exact KL is a subnormal of the dtype are dropped (JAX and CuPy
    flush subnormals; a KL that rounds to 0 is kept).

    The half dtypes (:class:`SweepScales`) take near-equal differences ``eps/4, eps, 8 eps,
    64 eps`` (then 1 and 10), the common shift ``2**(digits - 5)`` (64 in float16, 8 in
    bfloat16) with differences ``z/16``, differences ``4 eps z`` in the rows with -inf
    logits and about an ulp near -85 and -100, ``Q = P(1 + eps z)`` with eps and
    ``16 eps``, delta ``16 eps``, and an "exact shift +2" on a grid where it is exact.
    float16 keeps probabilities down to its smallest subnormal and KLs that round to
    subnormals (:func:`keeps_subnormals`), and its logit far above the others is 10 above.
    The rows ``Q = 2P`` are twice the rounded P, exactly, in every dtype.
    """
    p_by, q_by = _sides(parameterization)
    p, q, labels = _categorical_inputs(dtype_name, K, parameterization)
    cached = _load_cached(
        dtype_name, K, parameterization, _input_hash(dtype_name, K, parameterization, p, q)
    )
    if cached is None:
        exact, allowance = _references(p, q, p_by, q_by, dtype_name, p_by != q_by)
    else:
        exact, allowance = cached
    return _without_subnormal_kls(KLSweep(p, q, p_by, q_by, tuple(exact), allowance, labels))


def _bernoulli_logit_pairs(rng, scales):
    rows = []
    bases = [0.0, 0.5, -0.5, 3.0, -3.0, 15.0, -15.0, 40.0, -40.0, 80.0, -80.0]
    diffs = [*scales.bernoulli_diffs, 1.0, 10.0]
    for base in bases:
        for diff in diffs:
            for sign in (1, -1):
                rows.append(("near-equal logits", base, base + sign * diff))
        rows.append(("equal logits", base, base))
    x = rng.uniform(-80, 80, 60)
    d = rng.choice([-1.0, 1.0], 60) * 10.0 ** rng.uniform(math.log10(scales.smallest_diff), 1, 60)
    rows += [("near-equal logits", a, a + b) for a, b in zip(x, d, strict=True)]
    x, y = rng.uniform(-80, 80, 40), rng.uniform(-80, 80, 40)
    rows += [("far logits", a, b) for a, b in zip(x, y, strict=True)]
    return rows


def _bernoulli_prob_pairs(rng, scales):
    lowest, digits = scales.lowest, scales.digits
    rows = []
    p = np.concatenate([
        rng.uniform(0, 1, 30),
        10.0 ** rng.uniform(lowest, -1, 30),
        [0.5, 1e-30, 0.25],
    ])  # fmt: skip
    for x in p:
        eps = 10.0 ** rng.uniform(-digits, -1)
        rows.append(("near-equal probs", x, x * (1 + eps * rng.normal())))
        rows.append(("equal probs", x, x))
    near_one = 10.0 ** rng.uniform(-digits, -1, 30)  # 1 - p
    for c in near_one:
        eps = 10.0 ** rng.uniform(-digits, -1)
        rows.append(("near-equal probs near 1", 1 - c, 1 - c * (1 + eps * rng.normal())))
    x, y = rng.uniform(0, 1, 20), 10.0 ** rng.uniform(lowest, 0, 20)
    rows += [("far probs", a, b) for a, b in zip(x, y, strict=True)]
    rows += [("far probs", b, a) for a, b in zip(x, y, strict=True)]
    for a in (0.0, 1.0, 0.3):
        for b in (0.0, 1.0, 0.3):
            rows.append(("zeros and ones", a, b))
    return rows


@functools.cache
def bernoulli_sweep(dtype_name: str, parameterization: str, seed: int = 0) -> KLSweep:
    """Elementwise Bernoulli pairs for one parameterization (shape ``(rows,)``).

    Logits: bases 0, ±0.5, ±3, ±15, ±40, ±80 against differences ±1e-8 ... ±10, equal
    pairs, 60 random near-equal pairs on [-80, 80] with ``|difference|`` from 1e-8 to 10,
    40 far pairs.  Probabilities: uniform, ``10**U(-30, -1)`` (float32) or
    ``10**U(-300, -1)`` (float64), and near 1 (``1 - 10**U(-7 or -16, -1)``), each
    against a near-equal and an equal one; far pairs; zeros and ones (KL 0 or +inf).
    In the half dtypes the differences of logits are ``eps/4 ... 64 eps`` (then 1 and
    10) and the random ones from ``eps/4``, the relative differences of probabilities
    from ``10**-3`` (float16) or ``10**-2`` (bfloat16), and the smallest probabilities
    ``10**-7`` (float16: subnormals, which float32 holds as normal numbers) or ``10**-30``
    (bfloat16).
    Mixed rows take the logit or probability pairs with one side converted (rounded
    sigmoid or logit), so they include one distribution given both ways, plus a
    probability of 0 or 1 against the logits -3, 0, 3.  Rows whose inputs round out of
    range (a probability above 1, a subnormal (but in float16), a converted probability of 0
    or 1) are dropped, and so are rows whose exact KL is a subnormal of the dtype (but in
    float16).
    """
    p_by, q_by = _sides(parameterization)
    dtype = np.dtype(dtype_name).type
    scales = sweep_scales(dtype_name)
    rng = np.random.default_rng(
        [seed, PARAMETERIZATIONS.index(parameterization), np.dtype(dtype_name).itemsize, 2]
    )

    def sigmoid(x):
        return float(1 / (1 + mpmath.exp(-mpmath.mpf(x))))

    def logit(x):
        if x <= 0 or x >= 1:
            return None
        return float(mpmath.log(mpmath.mpf(x)) - mpmath.log1p(-mpmath.mpf(x)))

    pairs = []
    if "logits" in (p_by, q_by):
        for label, a, b in _bernoulli_logit_pairs(rng, scales):
            pairs.append((label, (a, "logits"), (b, "logits")))
    if "probs" in (p_by, q_by):
        for label, a, b in _bernoulli_prob_pairs(rng, scales):
            pairs.append((label, (a, "probs"), (b, "probs")))
    if p_by != q_by:
        for prob in (0.0, 1.0):
            for value in (-3.0, 0.0, 3.0):
                sides = {"probs": (prob, "probs"), "logits": (value, "logits")}
                pairs.append(("zeros and ones", sides[p_by], sides[q_by]))
    floor = _floor(dtype)
    p_values, q_values, labels = [], [], []
    for label, *sides in pairs:
        converted = []
        for (x, kind), want in zip(sides, (p_by, q_by), strict=True):
            if kind != want:
                x = sigmoid(x) if want == "probs" else logit(float(dtype(x)))
                if x is None or float(dtype(x)) in (0.0, 1.0):
                    break  # a converted logit whose probability rounds to 0 or 1
            x = float(dtype(x))
            if want == "probs" and not (x == 0 or floor <= x <= 1):
                break
            converted.append(x)
        if len(converted) == 2:
            p_values.append(converted[0])
            q_values.append(converted[1])
            labels.append(label if p_by == q_by else f"{label} (mixed)")
    mixed = p_by != q_by
    exact, allowance = [], []
    for a, b in zip(p_values, q_values, strict=True):
        kw = {f"p_{p_by[:-1]}": a, f"q_{q_by[:-1]}": b}
        exact.append(kl_bernoulli(**kw))
        if mixed:
            p_side = _bernoulli_side("p", kw.get("p_logit"), kw.get("p_prob"))
            q_side = _bernoulli_side("q", kw.get("q_logit"), kw.get("q_prob"))
            allowance.append(
                mixed_allowance_ulps(
                    dtype_name,
                    **{f"p_{k}": v for k, v in p_side.items()},
                    **{f"q_{k}": v for k, v in q_side.items()},
                )
            )
        else:
            allowance.append(0.0)
    sweep = KLSweep(
        np.array(p_values, dtype=dtype), np.array(q_values, dtype=dtype), p_by, q_by,
        tuple(exact), np.array(allowance), tuple(labels),
    )  # fmt: skip
    return _without_subnormal_kls(sweep)


@dataclass(frozen=True)
class SampleSweep:
    """``log_p``, ``log_q`` (NumPy arrays of the dtype) and the exact k1, k2, k3 per row."""

    log_p: np.ndarray
    log_q: np.ndarray
    k1: tuple
    k2: tuple
    k3: tuple
    labels: tuple


@functools.cache
def sample_kl_sweep(dtype_name: str, seed: int = 0) -> SampleSweep:
    """Pairs ``(log_p, log_q)`` with ``x = log_q - log_p`` of both signs.

    ``log_p`` in {0, -5, -100, -1e4} and ``U(-50, 0)``; ``|x|`` on a grid (1e-12, 1e-8,
    1e-4, 1e-2, 0.5, 1, 10, 80) and ``10**U(-12, log10 80)``; ``log_q`` is ``log_p + x``
    rounded to the dtype (the references use the rounded value, so small differences
    vanish where ``|log_p|`` is large, becoming equal pairs); plus equal pairs and
    ``log_q = -inf`` (all three +inf).  In the half dtypes the grid starts at
    ``eps/64, eps/4, eps, 16 eps`` and the random ``|x|`` at ``eps/64`` (``x = 80``
    overflows float16: k3 is +inf there).
    """
    dtype = np.dtype(dtype_name).type
    scales = sweep_scales(dtype_name)
    rng = np.random.default_rng([seed, np.dtype(dtype_name).itemsize, 3])
    bases = [0.0, -5.0, -100.0, -1e4, *rng.uniform(-50, 0, 6).tolist()]
    grid = [*scales.sample_grid, 0.5, 1.0, 10.0, 80.0]
    smallest = math.log10(scales.sample_grid[0])
    log_p, log_q, labels = [], [], []
    for base in bases:
        diffs = grid + (10.0 ** rng.uniform(smallest, math.log10(80), 20)).tolist()
        for d in diffs:
            for sign in (1.0, -1.0):
                log_p.append(base)
                log_q.append(base + sign * d)
                labels.append(f"log_p={base:g} x={sign * d:.3g}")
        log_p += [base, base]
        log_q += [base, -np.inf]
        labels += [f"log_p={base:g} equal", f"log_p={base:g} log_q=-inf"]
    log_p = np.array(log_p).astype(dtype)
    log_q = np.array(log_q).astype(dtype)
    pairs = list(zip(log_p.tolist(), log_q.tolist(), strict=True))
    return SampleSweep(
        log_p, log_q,
        tuple(sample_k1(a, b) for a, b in pairs),
        tuple(sample_k2(a, b) for a, b in pairs),
        tuple(sample_k3(a, b) for a, b in pairs),
        tuple(labels),
    )  # fmt: skip
