"""Dense accuracy sweep of the Normal–Normal KL, by region of the scale ratio.

The conformance suite checks a few thousand rows against mpmath.  This script checks
millions (``--size`` per region), to find the rare worst cases that a sparse sweep misses.
In float32 the reference is computed in float64 from the exact float32 inputs (``s - t``
is exact in float64, and the variance term ``expm1mx(2r)/2`` is evaluated with kullback's
float64 ``expm1mx``), so it is accurate to about 1e-8 ulp of float32.  With ``--float64``
the reference is mpmath at 40 digits, row by row (use a ``--size`` of about 2e4).

For each region of ``rho = scale_p / scale_q`` it prints the largest error in ulp, the
99.99th percentile, and the ratio where the largest error occurs.  Equal locations isolate
the variance term; ``--log-scale`` sweeps the ``log_scale`` parameterization instead
(float32 only).  Figures for the current kernel are in ``docs/numerics.rst``.

Usage: ``python tools/dense_sweep_normal.py [--size N] [--seed S] [--log-scale | --float64]
[--backend numpy|torch|jax|jax-jit]``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

import mpmath
import numpy as np

import kullback as kb
from kullback.special import expm1mx

# (name, lower, upper) bounds of log(rho), sampled uniformly, with log(scale_q) uniform in
# [-20, 20].  The kernel switches form at rho = 1/2, 2 and 4.
REGIONS = (
    ("near: rho in [1/2, 2]", -math.log(2), math.log(2)),
    ("rho in [2, 8]", math.log(2), math.log(8)),
    ("rho in [1/8, 1/2]", -math.log(8), -math.log(2)),
    ("rho in [8, 1e4]", math.log(8), 9.0),
    ("rho in [1e-4, 1/8]", -9.0, -math.log(8)),
    ("rho in [1e4, 1e17]", 9.0, 40.0),
    ("rho in [1e-17, 1e-4]", -40.0, -9.0),
)
# Scales sampled independently, log(scale_p) in [-87, 0] and log(scale_q) in [0, 88]: rho
# goes far below the smallest normal float, where the ratio itself underflows although the
# KL (about -log rho) does not.
EXTREME = "s tiny, t huge"


def scales(
    name: str, lower: float, upper: float, rng: np.random.Generator, size: int, dtype: type
) -> tuple[np.ndarray, np.ndarray]:
    """(scale_p, scale_q) of ``dtype`` for one region."""
    if name == EXTREME:
        largest_exponent = math.log(float(np.finfo(dtype).max)) - 1.0
        scale_p = np.exp(rng.uniform(-largest_exponent, 0.0, size)).astype(dtype)
        return scale_p, np.exp(rng.uniform(0.0, largest_exponent, size)).astype(dtype)
    scale_q = np.exp(rng.uniform(-20.0, 20.0, size)).astype(dtype)
    return (scale_q * np.exp(rng.uniform(lower, upper, size))).astype(dtype), scale_q


def reference(scale_p: np.ndarray, scale_q: np.ndarray) -> np.ndarray:
    """Variance term from exact float32 scales, in float64."""
    s = scale_p.astype(np.float64)
    t = scale_q.astype(np.float64)
    excess = (s - t) / t
    with np.errstate(divide="ignore"):
        log_ratio = np.where(np.abs(excess) < 0.5, np.log1p(excess), np.log(s / t))
    return 0.5 * np.asarray(expm1mx(2.0 * log_ratio))


def reference_mpmath(scale_p: np.ndarray, scale_q: np.ndarray) -> list:
    """Variance term from exact float64 scales, in mpmath at 40 digits."""
    with mpmath.workdps(40):
        ratios = [
            mpmath.mpf(float(s)) / mpmath.mpf(float(t))
            for s, t in zip(scale_p, scale_q, strict=True)
        ]
        return [(r * r - 1) / 2 - mpmath.log(r) for r in ratios]


def ulp_errors(computed: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """|computed - exact| in float32 ulp of ``exact``; an exact 0 must be computed as 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        unit = np.exp2(np.floor(np.log2(exact)) - 23)
        errors = np.abs(computed.astype(np.float64) - exact) / unit
    return np.where(exact == 0, np.where(computed == 0, 0.0, np.inf), errors)


def ulp_errors_mpmath(computed: np.ndarray, exact: list) -> np.ndarray:
    """|computed - exact| in float64 ulp of ``exact`` (all exact values are positive)."""
    with mpmath.workdps(40):
        return np.array(
            [
                float(
                    abs(mpmath.mpf(float(c)) - e)
                    / mpmath.mpf(2) ** (mpmath.floor(mpmath.log(e, 2)) - 52)
                )
                for c, e in zip(computed, exact, strict=True)
            ]
        )


def kl_on_backend(backend: str) -> Callable[[np.ndarray, np.ndarray, bool], np.ndarray]:
    """``(param_p, param_q, by_log) -> KL`` of two zero-mean Normals, computed on ``backend``."""
    if backend == "numpy":
        convert, finish = (lambda a: a), np.asarray
    elif backend == "torch":
        import torch

        convert, finish = torch.from_numpy, lambda t: t.numpy()
    else:
        import jax

        jax.config.update("jax_enable_x64", True)
        convert, finish = jax.numpy.asarray, np.asarray

    def kl(param_p: Any, param_q: Any, by_log: bool) -> Any:
        zero = param_p[..., :1] * 0  # an array of the backend, so that the namespace is its
        if by_log:
            return kb.kl_divergence(
                kb.Normal(zero, log_scale=param_p), kb.Normal(zero, log_scale=param_q)
            )
        return kb.kl_divergence(kb.Normal(zero, param_p), kb.Normal(zero, param_q))

    if backend == "jax-jit":
        import jax

        kl = jax.jit(kl, static_argnums=2)

    return lambda p, q, by_log: finish(kl(convert(p), convert(q), by_log))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2**21, help="samples per region")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-scale", action="store_true", help="sweep log_scale inputs")
    parser.add_argument("--float64", action="store_true", help="float64, against mpmath")
    parser.add_argument(
        "--backend",
        choices=("numpy", "torch", "jax", "jax-jit"),
        default="numpy",
        help="the arrays given to kullback (references are always computed with NumPy)",
    )
    args = parser.parse_args()
    compute = kl_on_backend(args.backend)
    if args.float64 and args.log_scale:
        parser.error("--log-scale is float32 only")
    dtype = np.float64 if args.float64 else np.float32
    rng = np.random.default_rng(args.seed)
    print(f"{dtype.__name__}, {args.size} samples per region, seed {args.seed}")
    print(f"{'region':24s} {'max ulp':>8s} {'p99.99':>8s}  {'rho at max':>11s}  allowed")
    for name, lower, upper in (*REGIONS, (EXTREME, None, None)):
        if args.log_scale:
            if name == EXTREME:
                continue
            log_q = rng.uniform(-20.0, 20.0, args.size).astype(np.float32)
            log_p = (log_q + rng.uniform(lower, upper, args.size)).astype(np.float32)
            p_param, q_param, by_log = log_p, log_q, True
            ratio = log_p.astype(np.float64) - log_q.astype(np.float64)
            exact = 0.5 * np.asarray(expm1mx(2.0 * ratio))
        else:
            scale_p, scale_q = scales(name, lower, upper, rng, args.size, dtype)
            if args.backend.startswith("jax"):  # XLA flushes subnormal inputs to 0
                normal = np.minimum(scale_p, scale_q) >= np.finfo(dtype).smallest_normal
                scale_p, scale_q = scale_p[normal], scale_q[normal]
            p_param, q_param, by_log = scale_p, scale_q, False
            exact = (reference_mpmath if args.float64 else reference)(scale_p, scale_q)
            ratio = np.log(scale_p.astype(np.float64)) - np.log(scale_q.astype(np.float64))
        computed = compute(p_param, q_param, by_log)
        errors = (ulp_errors_mpmath if args.float64 else ulp_errors)(computed, exact)
        worst = int(np.argmax(errors))
        allowed = 4.0 + 2.0 * abs(ratio[worst]) if args.log_scale else 4.0
        print(
            f"{name:24s} {errors[worst]:8.2f} {np.quantile(errors, 0.9999):8.2f}"
            f"  {math.exp(ratio[worst]):11.6g}  {allowed:7.2f}"
        )


if __name__ == "__main__":
    main()
