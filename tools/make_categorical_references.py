"""Compute and cache the mpmath references of the large categorical sweeps.

``tests.reference.categorical.categorical_sweep`` regenerates its inputs from fixed seeds
and reads the exact KLs (as decimal strings of ``DIGITS`` digits) and the mixed-row
allowances from ``tests/reference/data/categorical_K{K}.npz`` for the K in ``CACHED_K``,
if the SHA-256 hash of the inputs stored with them matches (else it recomputes them).  Run
this script after changing the sweeps or the references (bump ``REFERENCE_VERSION`` for
the latter), or when a NumPy release changes the random streams; ``--check`` recomputes
and compares with the cache instead of writing it.

The sweeps of every dtype in ``DTYPES`` are cached: float32, float64 and the half dtypes
(float16, bfloat16), whose inputs are drawn in their own range and resolution.

Usage: ``python tools/make_categorical_references.py [--K 1000 50000] [--jobs N] [--check]``
(from the repository root; K = 50000 takes about 40 s per sweep, 16 sweeps: about 11
minutes with ``--jobs 1``).
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.reference.categorical import (
    CACHED_K,
    DATA,
    PARAMETERIZATIONS,
    cache_path,
    compute_categorical_references,
)

DTYPES = ("float32", "float64", "float16", "bfloat16")


def one(job: tuple[str, int, str]) -> tuple[tuple[str, int, str], tuple, float]:
    start = time.perf_counter()
    result = compute_categorical_references(*job)
    return job, result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--K", type=int, nargs="+", default=list(CACHED_K))
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--check", action="store_true", help="compare with the cache")
    args = parser.parse_args()
    jobs = [(d, K, p) for K in args.K for d in DTYPES for p in PARAMETERIZATIONS]
    results: dict[int, dict[str, np.ndarray]] = {K: {} for K in args.K}
    with ProcessPoolExecutor(args.jobs) as pool:
        for (dtype_name, K, parameterization), (digest, exact, allowance), seconds in pool.map(
            one, jobs
        ):
            key = f"{dtype_name}_{parameterization}"
            results[K][f"{key}_hash"] = np.array(digest)
            results[K][f"{key}_exact"] = np.array(exact)
            results[K][f"{key}_allowance"] = allowance
            print(f"K={K} {key}: {len(exact)} rows, {seconds:.1f} s", flush=True)
    failed = False
    for K, arrays in results.items():
        path = cache_path(K)
        if not args.check:
            DATA.mkdir(exist_ok=True)
            np.savez_compressed(path, **arrays)
            print(f"wrote {path}")
            continue
        with np.load(path, allow_pickle=False) as cached:
            for name, value in arrays.items():
                same = name in cached and np.array_equal(cached[name], value)
                if not same:
                    failed = True
                    print(f"{path.name}: {name} differs from the cache")
    if args.check:
        print("the cache is stale" if failed else "the cache matches")
        sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
