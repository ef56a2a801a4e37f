"""Check ``kb.special.expm1mx`` on every float32 input of a range, against float64.

The conformance suite checks a sweep against mpmath; this script checks every float32
``x`` in the ranges below (about 370 million inputs), with references from kullback's own
float64 ``expm1mx`` (within a few float64 ulp, so about ``1e-8`` ulp of float32).  For
each range it prints the largest error in ulp of float32, where it occurs, and how many
inputs are above the 4-ulp bound.  Figures for the current code are in
``docs/numerics.rst`` (section on ``expm1mx``).

Usage: ``python tools/exhaustive_expm1mx.py [--backend numpy|torch|jax]`` (a few minutes).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import numpy as np

from kullback.special import expm1mx

# (lower, upper, sign): every float32 of magnitude in [lower, upper), with the given sign
RANGES = (
    (2.0**-12, 1.0, 1),
    (2.0**-12, 1.0, -1),
    (1.0, 89.4, 1),  # up to the overflow of the result (about 89.416)
    (1.0, 104.0, -1),
)
CHUNK = 2**22


def converters(backend: str) -> tuple[Callable[[np.ndarray], Any], Callable[[Any], np.ndarray]]:
    if backend == "torch":
        import torch

        return torch.from_numpy, lambda t: t.numpy()
    if backend == "jax":
        import jax.numpy as jnp

        return jnp.asarray, np.asarray
    return (lambda a: a), np.asarray


def check(lower: float, upper: float, sign: int, backend: str) -> tuple[float, float, int, int]:
    """(largest error in ulp, x where it occurs, inputs above 4 ulp, inputs checked)."""
    convert, back = converters(backend)
    first = int(np.float32(lower).view(np.int32))
    last = int(np.float32(upper).view(np.int32))
    worst, where, over, count = 0.0, float("nan"), 0, 0
    for start in range(first, last, CHUNK):
        bits = np.arange(start, min(start + CHUNK, last), dtype=np.int32)
        x = (sign * bits.view(np.float32)).astype(np.float32)
        got = back(expm1mx(convert(x))).astype(np.float64)
        exact = np.asarray(expm1mx(x.astype(np.float64)))
        with np.errstate(over="ignore"):
            unit = np.spacing(exact.astype(np.float32)).astype(np.float64)
        finite = np.isfinite(unit)
        errors = np.abs(got[finite] - exact[finite]) / unit[finite]
        i = int(np.argmax(errors))
        if errors[i] > worst:
            worst, where = float(errors[i]), float(x[finite][i])
        over += int(np.count_nonzero(errors > 4))
        count += x.size
    return worst, where, over, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("numpy", "torch", "jax"), default="numpy")
    args = parser.parse_args()
    print(f"float32, every input, backend {args.backend}")
    print(f"{'range of x':28s} {'max ulp':>8s} {'at x':>14s} {'> 4 ulp':>8s} {'inputs':>11s}")
    for lower, upper, sign in RANGES:
        worst, where, over, count = check(lower, upper, sign, args.backend)
        label = f"[{lower:g}, {upper:g})" if sign > 0 else f"(-{upper:g}, -{lower:g}]"
        print(f"{label:28s} {worst:8.2f} {where:14.7g} {over:8d} {count:11d}")


if __name__ == "__main__":
    main()
