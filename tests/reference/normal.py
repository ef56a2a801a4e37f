"""mpmath references and input sweeps for the Normal–Normal KL.

The references are evaluated at 60 significant digits on the exact float inputs (every
float is converted to an ``mpf`` without rounding), so their error is far below one ulp of
float64.  They take a fraction of a second for the sweeps below, so they are computed when
the tests run rather than cached.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import ml_dtypes
import mpmath
import numpy as np

DIGITS = 60


def kl_normal(loc_p, loc_q, scale_p=None, scale_q=None, log_scale_p=None, log_scale_q=None):
    """KL(N(loc_p, .) || N(loc_q, .)) in mpmath, from exact float inputs."""
    with mpmath.workdps(DIGITS):
        lp = mpmath.mpf(log_scale_p) if scale_p is None else mpmath.log(mpmath.mpf(scale_p))
        lq = mpmath.mpf(log_scale_q) if scale_q is None else mpmath.log(mpmath.mpf(scale_q))
        sq = mpmath.exp(lq) if scale_q is None else mpmath.mpf(scale_q)
        r = lp - lq
        d = (mpmath.mpf(loc_p) - mpmath.mpf(loc_q)) / sq
        return (mpmath.expm1(2 * r) - 2 * r) / 2 + d * d / 2


def expm1mx(x):
    """e**x - 1 - x in mpmath; the subtraction cancels about log10(1/|x|) digits, which are
    carried in addition to DIGITS (for x down to the smallest float)."""
    x = mpmath.mpf(x)  # exact: a float has at most 53 bits
    extra = 0 if x == 0 or abs(x) >= 1 else int(-mpmath.log10(abs(x))) + 1
    with mpmath.workdps(DIGITS + extra):
        return mpmath.expm1(x) - x


def ulp_errors(computed: np.ndarray, exact: list, dtype) -> np.ndarray:
    """|computed - exact| in units of the last place of ``exact`` in ``dtype``.

    Where the exact value is 0 the unit is the smallest subnormal, so anything but an exact
    0 counts as a huge error.  An infinite result is right (0) where the exact value rounds
    to infinity in ``dtype`` and wrong (inf) elsewhere; a finite result where it rounds to
    infinity is measured like any other, in units of the spacing of the largest floats.
    """
    info = ml_dtypes.finfo(dtype)
    digits = info.nmant + 1
    smallest = mpmath.mpf(2) ** (info.minexp - info.nmant)
    overflow = mpmath.mpf(float(info.max)) + mpmath.mpf(2) ** (info.maxexp - digits - 1)
    out = np.empty(len(exact))
    with mpmath.workdps(DIGITS):
        for i, (c, e) in enumerate(
            zip(np.asarray(computed, dtype=np.float64).tolist(), exact, strict=True)
        ):
            if mpmath.isnan(e) or np.isnan(c):
                out[i] = 0.0 if (mpmath.isnan(e) and np.isnan(c)) else np.inf
                continue
            if mpmath.isinf(e) or np.isinf(c):
                # +-inf is right exactly where the exact value rounds to it: beyond the
                # largest float by half an ulp of it or more
                rounds_to_inf = abs(e) >= overflow
                same_sign = (e > 0) == (c > 0)
                out[i] = 0.0 if (np.isinf(c) and rounds_to_inf and same_sign) else np.inf
                continue
            if e == 0:
                unit = smallest
            else:
                # the spacing of the floats at e: that of the subnormals below the normal
                # range, and ulp(max) above the largest float
                exponent = min(mpmath.floor(mpmath.log(abs(e), 2)), info.maxexp - 1)
                unit = max(mpmath.mpf(2) ** (exponent - digits + 1), smallest)
            out[i] = float(abs(mpmath.mpf(c) - e) / unit)
    return out


@dataclass(frozen=True)
class NormalSweep:
    """Inputs (as NumPy arrays of the target dtype) and exact KLs for one parameterization."""

    loc_p: np.ndarray
    loc_q: np.ndarray
    p_param: np.ndarray  # scale or log-scale of p
    q_param: np.ndarray
    p_by_log: bool
    q_by_log: bool
    exact: tuple
    log_ratio: np.ndarray  # |log(scale_p/scale_q)|, exact inputs, float64

    def kwargs(self, convert):
        p = {"log_scale" if self.p_by_log else "scale": convert(self.p_param)}
        q = {"log_scale" if self.q_by_log else "scale": convert(self.q_param)}
        return (convert(self.loc_p), p), (convert(self.loc_q), q)


@functools.cache
def normal_sweep(
    dtype_name: str, p_by_log: bool, q_by_log: bool, size: int = 1500, seed: int = 0
) -> NormalSweep:
    """Near-equal and far-apart Normals over extreme scales, for one parameterization.

    Log-scale ratios are drawn as ``±10**U(-12, 2)``, some exactly 0 and 30% uniformly on
    [-2.3, 2.3] (where the formulas change region); standardized mean gaps as
    ``±10**U(-12, 2)`` (some exactly 0); the log-scale of q from ``U(-30, 30)``.  Dropped:
    rows whose inputs or exact KL are not finite in the dtype (overflow is tested
    separately) and scales that are not normal floats (backends that flush subnormals
    cannot hold them).

    The half dtypes (float16, bfloat16), which hold far fewer digits, and float16 a far
    narrower range, take ranges from their ``finfo``: ratios as
    ``±10**U(log10(eps) - 3, log10(log(max)))`` (from a thousandth of an ulp, which a
    log-scale near 0 can still hold, to just past the overflow of the KL), gaps as
    ``±10**U(log10(eps) - 3, 2)``, and the
    log-scale of q from ``U(-0.8 L, 0.8 L)``, ``L = min(log(max), -log(smallest normal))``
    (±7.8 in float16, ±70 in bfloat16), so that scales reach the ends of the range.
    float32 and float64 draw exactly the numbers they always did.
    """
    dtype = np.dtype(dtype_name).type
    rng = np.random.default_rng([seed, int(p_by_log), int(q_by_log), np.dtype(dtype_name).itemsize])
    n = size
    info = ml_dtypes.finfo(dtype)
    if info.bits >= 32:
        lowest_exponent, highest_exponent, log_q_limit = -12.0, 2.0, 30.0
    else:
        lowest_exponent = math.log10(float(info.eps)) - 3
        highest_exponent = math.log10(math.log(float(info.max)))
        log_q_limit = 0.8 * min(math.log(float(info.max)), -math.log(float(info.tiny)))
    sign = rng.choice([-1.0, 1.0], n)
    log_ratio = sign * 10.0 ** rng.uniform(lowest_exponent, highest_exponent, n)
    log_ratio[: n // 20] = 0.0
    # a dense band of moderate ratios, where the formulas change region
    log_ratio[n // 5 : n // 2] = rng.uniform(-2.3, 2.3, n // 2 - n // 5)
    gap = rng.choice([-1.0, 1.0], n) * 10.0 ** rng.uniform(lowest_exponent, 2, n)
    gap[n // 20 : n // 10] = 0.0
    log_q = rng.uniform(-log_q_limit, log_q_limit, n)
    log_q[n // 10 : n // 5] = 0.0
    log_p = log_q + log_ratio
    loc_q = rng.normal(0, 1, n) * np.exp(log_q) * 10.0 ** rng.uniform(-3, 3, n)
    loc_p = loc_q + gap * np.exp(log_q)
    with np.errstate(all="ignore"):
        p_param = (log_p if p_by_log else np.exp(log_p)).astype(dtype)
        q_param = (log_q if q_by_log else np.exp(log_q)).astype(dtype)
        loc_p, loc_q = loc_p.astype(dtype), loc_q.astype(dtype)
    keep = np.isfinite(p_param) & np.isfinite(q_param) & np.isfinite(loc_p) & np.isfinite(loc_q)
    tiny = ml_dtypes.finfo(dtype).tiny
    if not p_by_log:
        keep &= p_param >= tiny
    if not q_by_log:
        keep &= q_param >= tiny
    rows = np.flatnonzero(keep)
    exact, kept, ratios = [], [], []
    max_value = ml_dtypes.finfo(dtype).max
    for i in rows:
        args = {"loc_p": float(loc_p[i]), "loc_q": float(loc_q[i])}
        args["log_scale_p" if p_by_log else "scale_p"] = float(p_param[i])
        args["log_scale_q" if q_by_log else "scale_q"] = float(q_param[i])
        value = kl_normal(**args)
        if value < max_value:
            exact.append(value)
            kept.append(i)
            lp = float(p_param[i]) if p_by_log else float(mpmath.log(float(p_param[i])))
            lq = float(q_param[i]) if q_by_log else float(mpmath.log(float(q_param[i])))
            ratios.append(abs(lp - lq))
    kept = np.asarray(kept, dtype=np.intp)
    return NormalSweep(
        loc_p[kept], loc_q[kept], p_param[kept], q_param[kept], p_by_log, q_by_log,
        tuple(exact), np.asarray(ratios),
    )  # fmt: skip


@functools.cache
def log_difference_sweep(dtype_name: str, size: int = 1200, seed: int = 0):
    """``(scale, log_scale, exact)`` with ``r = log(scale) - log_scale`` of both signs.

    ``log(scale)`` is drawn uniformly over the dtype's normal range (a quarter on [-3, 3]),
    ``|r|`` as ``10**U(-12, 1)``; ``log_scale`` is the float nearest ``log(scale) - r``, so
    the realized ``r`` of the exact inputs (returned, as mpf) differs from the target where
    that rounding exceeds it (in float32, below about ``ulp(log scale)``).  Plus exact
    equality ``scale = 1``, ``log_scale = 0``, and rows at the edges of the range.  The
    half dtypes draw ``|r|`` as ``10**U(log10(eps) - 3, 1)``: below that every target
    rounds away, as most do below ``ulp(log scale)``.
    """
    dtype = np.dtype(dtype_name).type
    info = ml_dtypes.finfo(dtype)
    lowest_exponent = -12.0 if info.bits >= 32 else math.log10(float(info.eps)) - 3
    rng = np.random.default_rng([seed, np.dtype(dtype_name).itemsize])
    log_s = rng.uniform(np.log(float(info.tiny)), np.log(float(info.max)), size)
    log_s[: size // 4] = rng.uniform(-3, 3, size // 4)
    with np.errstate(all="ignore"):
        scale = np.exp(log_s).astype(dtype)
    edges = np.array([info.tiny, info.max, 1.0, 2.0, 0.5], dtype=dtype)
    scale = np.concatenate([edges, scale[np.isfinite(scale) & (scale >= info.tiny)]])
    target = rng.choice([-1.0, 1.0], len(scale)) * 10.0 ** rng.uniform(
        lowest_exponent, 1, len(scale)
    )
    target[2] = 0.0
    with mpmath.workdps(DIGITS):
        logs = [mpmath.log(mpmath.mpf(float(s))) for s in scale]
        log_scale = np.array([float(x - t) for x, t in zip(logs, target, strict=True)])
        log_scale = log_scale.astype(dtype)
        exact = tuple(x - mpmath.mpf(float(v)) for x, v in zip(logs, log_scale, strict=True))
    return scale, log_scale, exact


@functools.cache
def same_distribution_sweep(dtype_name: str, size: int = 1200, seed: int = 1):
    """``(scale, log_scale, exact r)`` for one distribution given both ways, as a user would.

    Half the rows take a scale and its log rounded to the dtype, half a log-scale and the
    scale it rounds to (``exp`` rounded); ``log(scale)`` uniform on [-40, 40] (a tenth on
    [-1e-3, 1e-3]).  So ``|r|`` is below an ulp of ``log(scale)``: about 1e-17 in float64
    and 1e-8 in float32, and much less in a few rows.  The half dtypes take ``log(scale)``
    over their whole normal range instead (float16's is [-9.7, 11.1]): ``|r|`` is then up
    to 4e-3 (float16) or 0.25 (bfloat16), and down to about 1e-10 and 1e-7 in a few rows.
    """
    dtype = np.dtype(dtype_name).type
    info = ml_dtypes.finfo(dtype)
    rng = np.random.default_rng([seed, np.dtype(dtype_name).itemsize])
    if info.bits >= 32:
        target = rng.uniform(-40, 40, size)
    else:  # exp(target) rounds to a normal float: the ends, less an ulp of the scale
        lowest = math.log(float(info.tiny)) + float(info.eps)
        target = rng.uniform(lowest, math.log(float(info.max)) - float(info.eps), size)
    target[: size // 10] = rng.uniform(-1e-3, 1e-3, size // 10)
    with mpmath.workdps(DIGITS):
        scale, log_scale, exact = [], [], []
        for n, x in enumerate(target):
            if n % 2:  # a scale and its log
                s = float(dtype(float(mpmath.exp(x))))
                t = float(dtype(float(mpmath.log(mpmath.mpf(s)))))
            else:  # a log-scale and its exp
                t = float(dtype(x))
                s = float(dtype(float(mpmath.exp(mpmath.mpf(t)))))
            scale.append(s)
            log_scale.append(t)
            exact.append(mpmath.log(mpmath.mpf(s)) - mpmath.mpf(t))
    return np.array(scale, dtype=dtype), np.array(log_scale, dtype=dtype), tuple(exact)
