"""The negative-KL problem, and kullback's answer: ``python -m kullback.demo``.

A VAE-style batch near its optimum: 1000 diagonal Gaussians of 64 dimensions in float32, with
``p`` a tiny perturbation of ``q``.  The textbook closed form fails there in two ways: written
from log-variances, as VAE code does, ``var_ratio - 1`` is mostly rounding and the KL comes
out negative; written from scales, as ``torch.distributions`` does, ``var_ratio + t1`` rounds
the location term away.  Each is compared with a float64 reference that kullback computes
from the same float32 inputs.
"""

from __future__ import annotations

import numpy as np

import kullback as kb

ROWS, DIMS, STEP = 1000, 64, 3e-5


def closed_form(var_ratio, log_var_ratio, t1):
    """The textbook ``KL = (var_ratio + t1 - 1 - log(var_ratio))/2``, summed over dimensions."""
    return np.sum(0.5 * (var_ratio + t1 - 1 - log_var_ratio), axis=-1)


def naive_from_log_variances(loc_p, log_scale_p, loc_q, log_scale_q):
    """As VAE code writes it: from log-variances, ``var_ratio = exp(lv_p) / exp(lv_q)``."""
    log_var_p, log_var_q = 2 * log_scale_p, 2 * log_scale_q
    var_ratio = np.exp(log_var_p) / np.exp(log_var_q)
    return closed_form(var_ratio, log_var_p - log_var_q, (loc_p - loc_q) ** 2 / np.exp(log_var_q))


def naive_from_scales(loc_p, log_scale_p, loc_q, log_scale_q):
    """As torch.distributions computes it: from ``scale = exp(log_scale)``."""
    scale_p, scale_q = np.exp(log_scale_p), np.exp(log_scale_q)
    var_ratio = (scale_p / scale_q) ** 2
    return closed_form(var_ratio, np.log(var_ratio), ((loc_p - loc_q) / scale_q) ** 2)


def main() -> None:
    rng = np.random.default_rng(0)
    f32 = np.float32
    loc_q = rng.normal(0, 1, (ROWS, DIMS)).astype(f32)
    log_scale_q = rng.normal(0, 0.5, (ROWS, DIMS)).astype(f32)
    loc_p = (loc_q + STEP * rng.normal(0, 1, (ROWS, DIMS)) * np.exp(log_scale_q)).astype(f32)
    log_scale_p = (log_scale_q + STEP * rng.normal(0, 1, (ROWS, DIMS))).astype(f32)
    inputs = (loc_p, log_scale_p, loc_q, log_scale_q)

    p, q = kb.Normal(loc_p, log_scale=log_scale_p), kb.Normal(loc_q, log_scale=log_scale_q)
    results = {
        "naive, from log-variances": naive_from_log_variances(*inputs),
        "naive, from scales": naive_from_scales(*inputs),
        "kullback.kl_divergence": kb.kl_divergence(p, q, axis=-1),
    }
    # The reference: the same float32 numbers, widened (exactly) to float64.
    p64 = kb.Normal(loc_p.astype(np.float64), log_scale=log_scale_p.astype(np.float64))
    q64 = kb.Normal(loc_q.astype(np.float64), log_scale=log_scale_q.astype(np.float64))
    reference = kb.kl_divergence(p64, q64, axis=-1)

    print(f"KL(p || q) for {ROWS} diagonal Gaussians of {DIMS} dimensions in float32, with p")
    print(f"{STEP:g} standard deviations from q (a VAE near its optimum); the reference is")
    print(f"kullback in float64 on the same inputs (median KL {np.median(reference):.3g}).\n")
    print(f"{'':<28}{'KL < 0':>8}{'median rel. error':>19}{'max rel. error':>16}")
    for name, kl in results.items():
        relative = np.abs(kl.astype(np.float64) - reference) / reference
        negative = f"{np.mean(kl < 0):.1%}"
        print(f"{name:<28}{negative:>8}{np.median(relative):>19.1e}{np.max(relative):>16.1e}")

    row = int(np.argmin(results["naive, from log-variances"]))
    print(f"\nRow {row}, the most negative (reference {reference[row]:.6e}):")
    for name, kl in results.items():
        print(f"  {name:<26}{kl[row]:>14.6e}")


if __name__ == "__main__":
    main()
