"""Check ``kb.special.expm1mx`` on every float32 input, against an independent float64 value.

The conformance suite checks sweeps against mpmath; this script checks every float32 ``x``
whose ``e**x - 1 - x`` is a normal float32 or overflows (about 3.2 billion inputs), on each
backend: NumPy, PyTorch, JAX eagerly and JAX under ``jax.jit``.  The reference is float64:
the Taylor series (to ``x**14``) for ``|x| < 1/4``, ``expm1(x) - x`` elsewhere (at most 9
float64 ulp of cancellation), so within about ``1e-7`` ulp of float32.  For each range it
prints the largest error in ulp of float32, where it occurs, how many inputs are above the
bound (2.5 ulp by default), and how many do not overflow where the exact value does (or
overflow where it does not).

Usage::

    python tools/exhaustive_expm1mx.py [--backend numpy torch jax jax.jit] [--half]
        [--bound 2.5] [--ranges 0 1 ...]

``--half`` checks ``2 * half_expm1mx(x)`` (the KL's kernel, which overflows later).  A
backend takes about 3 (NumPy, ``jax.jit``) to 12 minutes (PyTorch) on two cores; the two
ranges beyond ``|x| = 89.5`` and ``104`` are two thirds of the inputs.

Measured for the tabulated form (``special._scaled_expm1mx``): at most 1.55 ulp on NumPy,
PyTorch and JAX (at x = 0.6285302 and -0.1804353), 1.52 under ``jax.jit``; no input above
2.5 ulp, and infinite exactly where the exact value overflows.  The previous series/``exp``
form reached 3.98 ulp on NumPy (x = 4.19597, NumPy's float32 ``exp``) and 3.52 on every
backend (x = 1.936116).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import kullback as kb
from kullback import _namespace
from kullback.special import half_expm1mx

# (lower, upper, sign): every float32 of magnitude in [lower, upper), with the given sign.
# Below 2**-62 the result (x**2/2 < 2**-125) is no longer a normal float32.
LARGEST = float(np.finfo(np.float32).max)
RANGES = (
    (2.0**-62, 2.0**-12, 1),
    (2.0**-12, 1.0, 1),
    (1.0, 89.5, 1),  # up to and beyond the overflow of the result (88.72; 89.42 for the half)
    (89.5, math.inf, 1),  # all +inf
    (2.0**-62, 2.0**-12, -1),
    (2.0**-12, 1.0, -1),
    (1.0, 104.0, -1),
    (104.0, math.inf, -1),  # -1 - x, to the largest float32 and -inf
)
CHUNK = 2**22


def reference(x: np.ndarray) -> np.ndarray:
    """e**x - 1 - x in float64, for float32 ``x``."""
    x = x.astype(np.float64)
    small = np.clip(x, -0.25, 0.25)
    taylor = np.zeros_like(x)
    for k in range(14, 1, -1):
        taylor = (taylor + 1.0 / math.factorial(k)) * small
    taylor *= small
    with np.errstate(over="ignore", invalid="ignore"):
        exact = np.where(np.abs(x) < 0.25, taylor, np.expm1(x) - x)
    return np.where(np.isinf(x), np.inf, exact)


def evaluator(backend: str, half: bool) -> Callable[[np.ndarray], np.ndarray]:
    """The function under test on ``backend``, taking and returning NumPy float32 arrays."""
    if backend == "numpy":
        import array_api_compat.numpy as xp

        convert: Callable[[np.ndarray], Any] = lambda a: a  # noqa: E731
        back: Callable[[Any], np.ndarray] = np.asarray
    elif backend == "torch":
        import array_api_compat.torch as xp
        import torch

        convert, back = torch.from_numpy, lambda t: t.numpy()
    else:
        import jax
        import jax.numpy as jnp
        from array_api_compat import array_namespace

        xp = array_namespace(jnp.zeros(1))
        convert, back = jnp.asarray, np.asarray

    def function(x: Any) -> Any:
        if not half:
            return kb.special.expm1mx(x)
        with _namespace.errstate(xp):  # as the public functions call it
            return 2.0 * half_expm1mx(x, xp)

    if backend == "jax.jit":
        compiled = jax.jit(function)

        def run(x: np.ndarray) -> np.ndarray:
            padded = np.zeros(CHUNK, dtype=np.float32)  # one shape: one compilation
            padded[: x.size] = x
            return back(compiled(convert(padded)))[: x.size]

        return run
    return lambda x: back(function(convert(x)))


def check(lower: float, upper: float, sign: int, run: Callable[[np.ndarray], np.ndarray]):
    """(largest error in ulp, x where it occurs, inputs above the bound, wrong overflows,
    inputs checked), with the bound from the command line (global BOUND)."""
    first = int(np.float32(lower).view(np.int32))
    last = int(np.float32(upper).view(np.int32)) + (1 if upper == math.inf else 0)
    worst, where, over, wrong, count = 0.0, math.nan, 0, 0, 0
    for start in range(first, last, CHUNK):
        bits = np.arange(start, min(start + CHUNK, last), dtype=np.int32)
        x = bits.view(np.float32) if sign > 0 else -bits.view(np.float32)
        got = run(x).astype(np.float64)
        exact = reference(x)
        with np.errstate(over="ignore"):
            rounded = exact.astype(np.float32)
            unit = np.spacing(rounded).astype(np.float64)
        finite = np.isfinite(rounded)
        wrong += int(np.count_nonzero(np.isinf(got) != ~finite))
        errors = np.abs(got[finite] - exact[finite]) / unit[finite]
        if errors.size:
            i = int(np.argmax(errors))
            if errors[i] > worst:
                worst, where = float(errors[i]), float(x[finite][i])
        over += int(np.count_nonzero(errors > BOUND))
        count += x.size
    return worst, where, over, wrong, count


BOUND = 2.5


def main() -> None:
    global BOUND
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backend", nargs="+", choices=("numpy", "torch", "jax", "jax.jit"), default=["numpy"]
    )
    parser.add_argument("--half", action="store_true", help="check 2 * half_expm1mx")
    parser.add_argument("--bound", type=float, default=BOUND)
    parser.add_argument("--ranges", type=int, nargs="+", default=range(len(RANGES)))
    args = parser.parse_args()
    BOUND = args.bound
    name = "2 * half_expm1mx" if args.half else "expm1mx"
    for backend in args.backend:
        run = evaluator(backend, args.half)
        print(f"{name}, float32, every input, backend {backend}")
        print(
            f"{'range of x':26s} {'max ulp':>8s} {'at x':>14s} {f'> {BOUND:g} ulp':>10s}"
            f" {'overflow':>9s} {'inputs':>11s} {'seconds':>8s}"
        )
        for i in args.ranges:
            lower, upper, sign = RANGES[i]
            start = time.perf_counter()
            worst, where, over, wrong, count = check(lower, upper, sign, run)
            label = f"[{lower:g}, {upper:g})" if sign > 0 else f"(-{upper:g}, -{lower:g}]"
            print(
                f"{label:26s} {worst:8.2f} {where:14.7g} {over:10d} {wrong:9d} {count:11d}"
                f" {time.perf_counter() - start:8.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
