"""Interleaved timing of kullback's KL divergences against their peers on each backend.

What it measures
----------------
Three families of float32 cases, each selectable with ``--only`` (default: all):

``normal``: the elementwise KL divergence ``KL(N(loc_p, scale_p) || N(loc_q, scale_q))``
for n = 4096 and n = 10**6 elements, computed from four raw arrays.  The locations are drawn
from N(0, 1) and the scales are ``exp(N(0, 0.1))``, so p and q are nearly equal, as near a
training optimum.  Contenders, always on the same backend:

* NumPy: ``kullback`` against the naive formula
  ``0.5 * (r + ((mp - mq) / sq)**2 - 1 - log(r))`` with ``r = (sp / sq)**2``.
* torch eager (CPU): ``kullback`` (building ``kb.Normal`` inside the timed call) against
  ``torch.distributions.kl_divergence`` with torch's default settings (building the torch
  ``Normal`` objects, and so running their default argument validation, inside the timed
  call) and against the naive formula in torch.  A second pair times the KL alone on
  prebuilt distributions: ``kullback (prebuilt)`` against ``td (prebuilt, no construction)``.
* JAX: ``kullback`` against the naive formula, both under ``jax.jit`` (functions of the
  four arrays, compiled before timing) and eagerly; results are ``block_until_ready()``-ed.

Each Normal group also times the same KL from log-scales (``log(scale)`` of the same
inputs, as a VAE encoder outputs them): ``kullback (log_scale)`` against the naive formula
written with ``exp`` and, on torch, against ``torch.distributions`` fed ``exp(log_scale)``;
and from mixed parameterizations, p by scale and q by log-scale (``kullback (mixed)``,
which computes ``log(scale_p) - log_scale_q`` in double words), against the naive formula
(and ``torch.distributions``) with ``scale_q = exp(log_scale_q)``; and a VAE's KL term, p by
log-scale against the prior ``kb.Normal(0.0, 1.0)`` (``kullback (prior N(0, 1))``), against
the closed form ``(exp(2 log_scale) + loc**2 - 1 - 2 log_scale) / 2`` (and, on torch,
``torch.distributions`` against ``Normal(0.0, 1.0)``).

``categorical``: ``KL(Categorical(logits=a) || Categorical(logits=b))`` over the last axis,
for logits of shape (128, 32768) (a language model's vocabulary) and (4096, 512), with
``a = 2 N(0, 1)`` and ``b = a + 0.01 N(0, 1)`` (a distilled student near its teacher, or a
policy near its reference).  ``kullback`` builds the two ``kb.Categorical`` inside the
timed call.  Peers: on torch eager, ``F.kl_div(F.log_softmax(b, -1), F.log_softmax(a, -1),
log_target=True, reduction="none").sum(-1)`` and ``torch.distributions.kl_divergence`` of
two ``Categorical(logits=...)`` built in the call; on NumPy and under ``jax.jit``, the naive
formula ``sum(exp(lp) * (lp - lq), -1)`` with ``lp = a - logsumexp(a)`` (the largest logit
subtracted first).  ``categorical-compile`` times ``kullback`` and the ``F.kl_div`` formula
under ``torch.compile`` (inductor, static shapes, its on-disk cache off); each compilation
is timed separately and given up, with a printed reason, after ``COMPILE_TIMEOUT_S``.

``k3``: the per-token estimator ``kb.sample_kl(log_p, log_q, estimator="k3")`` on 10**6
float32 log-probabilities (``log_p = -Exponential(1)``, ``log_q = log_p + 0.01 N(0, 1)``),
against what trainers write, ``exp(d) - d - 1`` with ``d = log_q - log_p``, on NumPy, torch
eager and under ``jax.jit``.

The seed is fixed.  Where the issue that asked for a case set a ceiling on the ratio, the
table shows it next to the ratio, with ``pass`` or ``FAIL``.

How it times
------------
For each group (family, backend, case) every contender is warmed up, then an inner loop
count is chosen per contender so that one sample lasts at least about a millisecond.  The
group's contenders then run round-robin (A, B, C, A, B, C, ...) for a fixed number of rounds,
timed with ``time.perf_counter`` and with the garbage collector off, so that slow drifts of
a shared machine hit every contender alike.  Before timing, every peer's result is checked
against kullback's (to a tolerance far below the values), so that all compute the same thing.

How to read it
--------------
The table gives, per contender, the median time of one call and the interquartile range of
the samples in percent of that median.  The ratio column is the matching kullback
contender's median over the peer's median: below 1 kullback is faster, above 1 it is
slower.  The ratios are the result; absolute times depend on the machine and its load.

Caveat: at n = 10**6 the eager backends allocate a fresh 4 MB temporary per operation.
With glibc's default malloc, freed blocks that size go back to the operating system and
the next operation faults its pages in again; in a VM that can dominate the eager times,
and it costs kullback (several dozen temporaries) more than its peers (under ten).  Running
with ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824`` keeps such
blocks in the process; the header prints any ``MALLOC_*`` variables that are set.

Usage: ``python benchmarks/bench.py [--quick] [--only FAMILY[,FAMILY]] [--json PATH]`` (or
``nox -s bench -- ...``), with families ``normal``, ``categorical``, ``categorical-compile``
and ``k3``.  Backends that cannot be imported (torch, jax) are skipped with a note.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import math
import os
import platform
import signal
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

import kullback as kb

SEED = 20240917
SIZES = (4096, 10**6)
ROUNDS = {4096: 200, 10**6: 25}
QUICK_ROUNDS = {4096: 30, 10**6: 5}
CATEGORICAL_SHAPES = ((128, 32768), (4096, 512))
CATEGORICAL_ROUNDS, CATEGORICAL_QUICK_ROUNDS = 11, 3
COMPILE_ROUNDS, COMPILE_QUICK_ROUNDS = 5, 3
COMPILE_TIMEOUT_S = 120  # one torch.compile of one contender, for one shape
K3_SIZE = 10**6
K3_ROUNDS, K3_QUICK_ROUNDS = 25, 5
FAMILIES = ("normal", "categorical", "categorical-compile", "k3")
MIN_SAMPLE_S = 1e-3  # an inner loop is sized so that one sample lasts at least this long
WARMUP_S = 0.1  # each contender runs for at least this long (and 3 calls) before timing
MAX_INNER = 100_000
CHECK_RTOL = 1e-4  # agreement required between kullback and each peer, before timing
CHECK_ATOL = 1e-5

KULLBACK = "kullback"
KULLBACK_PREBUILT = "kullback (prebuilt)"
KULLBACK_LOG = "kullback (log_scale)"
KULLBACK_MIXED = "kullback (mixed)"
KULLBACK_PRIOR = "kullback (prior N(0, 1))"

# Ceilings on kullback / peer, from the issue that asked for the Categorical and k3 cases.
TARGET_TORCH_KL_DIV = 20.0
TARGET_TORCH_DISTRIBUTIONS = 7.0
TARGET_NUMPY_NAIVE = 10.0
TARGET_JAX_JIT_NAIVE = 12.0
TARGET_K3 = 15.0


@dataclass(frozen=True)
class Contender:
    """One way of computing the KL: a call of no arguments that returns the result.

    ``reference`` is the label of the kullback contender a peer is compared to, and
    ``None`` for a kullback contender itself.  ``finish`` turns the result into a NumPy
    array for the agreement check.  ``target``, for a peer, is the largest acceptable
    kullback / peer ratio, where one was set.
    """

    label: str
    call: Callable[[], Any]
    reference: str | None
    finish: Callable[[Any], np.ndarray] = np.asarray
    target: float | None = None


@dataclass(frozen=True)
class Timing:
    """Per-call times (seconds) of one contender in one group."""

    family: str
    backend: str
    case: str
    contender: Contender
    inner: int
    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def iqr_percent(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        q1, _, q3 = statistics.quantiles(self.samples, n=4)
        return 100.0 * (q3 - q1) / self.median


def make_inputs(n: int, seed: int = SEED) -> tuple[np.ndarray, ...]:
    """float32 (loc_p, scale_p, loc_q, scale_q): N(0, 1) locations, exp(N(0, 0.1)) scales."""
    rng = np.random.default_rng(seed)
    loc_p = rng.standard_normal(n)
    loc_q = rng.standard_normal(n)
    scale_p = np.exp(rng.normal(0.0, 0.1, n))
    scale_q = np.exp(rng.normal(0.0, 0.1, n))
    return tuple(a.astype(np.float32) for a in (loc_p, scale_p, loc_q, scale_q))


def naive_normal_kl(mp: Any, sp: Any, mq: Any, sq: Any, log: Callable[[Any], Any]) -> Any:
    """The textbook formula, as torch.distributions writes it; ``log`` is the backend's."""
    var_ratio = (sp / sq) ** 2
    t1 = ((mp - mq) / sq) ** 2
    return 0.5 * (var_ratio + t1 - 1 - log(var_ratio))


def naive_normal_kl_from_log_scales(
    mp: Any, lp: Any, mq: Any, lq: Any, exp: Callable[[Any], Any]
) -> Any:
    """The textbook formula from log-scales, as VAE code writes it; ``exp`` is the backend's."""
    log_ratio = lp - lq
    return 0.5 * (exp(2 * log_ratio) + ((mp - mq) * exp(-lq)) ** 2 - 1 - 2 * log_ratio)


def kullback_normal_kl(mp: Any, sp: Any, mq: Any, sq: Any) -> Any:
    """kullback from the raw arrays, building the two ``kb.Normal`` on the way."""
    return kb.kl_divergence(kb.Normal(mp, sp), kb.Normal(mq, sq))


def kullback_normal_kl_from_log_scales(mp: Any, lp: Any, mq: Any, lq: Any) -> Any:
    return kb.kl_divergence(kb.Normal(mp, log_scale=lp), kb.Normal(mq, log_scale=lq))


def kullback_normal_kl_mixed(mp: Any, sp: Any, mq: Any, lq: Any) -> Any:
    """p by scale, q by log-scale: the double-word ``log(scale_p) - log_scale_q`` path."""
    return kb.kl_divergence(kb.Normal(mp, sp), kb.Normal(mq, log_scale=lq))


def kullback_normal_kl_to_prior(mp: Any, lp: Any) -> Any:
    """A VAE's KL term: the encoder's Normal by log-scale, the prior ``N(0, 1)`` by scale."""
    return kb.kl_divergence(kb.Normal(mp, log_scale=lp), kb.Normal(0.0, 1.0))


def naive_normal_kl_to_prior(mp: Any, lp: Any, exp: Callable[[Any], Any]) -> Any:
    """The VAE closed form, ``-(1 + 2 log_scale - loc**2 - exp(2 log_scale)) / 2``."""
    return 0.5 * (exp(2 * lp) + mp * mp - 1 - 2 * lp)


def naive_normal_kl_mixed(
    mp: Any, sp: Any, mq: Any, lq: Any, log: Callable[[Any], Any], exp: Callable[[Any], Any]
) -> Any:
    """The textbook formula with ``scale_q = exp(log_scale_q)``."""
    return naive_normal_kl(mp, sp, mq, exp(lq), log)


def log_scales(arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
    """(loc_p, log_scale_p, loc_q, log_scale_q) in float32 from the scale inputs."""
    mp, sp, mq, sq = arrays
    return mp, np.log(sp), mq, np.log(sq)


def numpy_contenders(arrays: Sequence[np.ndarray]) -> list[Contender]:
    mp, sp, mq, sq = arrays
    _, lp, _, lq = log_scales(arrays)
    return [
        Contender(KULLBACK, lambda: kullback_normal_kl(mp, sp, mq, sq), None),
        Contender("naive formula", lambda: naive_normal_kl(mp, sp, mq, sq, np.log), KULLBACK),
        Contender(KULLBACK_LOG, lambda: kullback_normal_kl_from_log_scales(mp, lp, mq, lq), None),
        Contender(
            "naive formula (log-scales)",
            lambda: naive_normal_kl_from_log_scales(mp, lp, mq, lq, np.exp),
            KULLBACK_LOG,
        ),
        Contender(KULLBACK_MIXED, lambda: kullback_normal_kl_mixed(mp, sp, mq, lq), None),
        Contender(
            "naive formula (mixed)",
            lambda: naive_normal_kl_mixed(mp, sp, mq, lq, np.log, np.exp),
            KULLBACK_MIXED,
        ),
        Contender(KULLBACK_PRIOR, lambda: kullback_normal_kl_to_prior(mp, lp), None),
        Contender(
            "naive formula (prior)",
            lambda: naive_normal_kl_to_prior(mp, lp, np.exp),
            KULLBACK_PRIOR,
        ),
    ]


def torch_contenders(torch: ModuleType, arrays: Sequence[np.ndarray]) -> list[Contender]:
    from torch.distributions import Normal, kl_divergence

    mp, sp, mq, sq = (torch.from_numpy(a) for a in arrays)
    _, lp, _, lq = (torch.from_numpy(a) for a in log_scales(arrays))
    kb_p, kb_q = kb.Normal(mp, sp), kb.Normal(mq, sq)
    td_p, td_q = Normal(mp, sp), Normal(mq, sq)

    def finish(t: Any) -> np.ndarray:
        return t.numpy()

    return [
        Contender(KULLBACK, lambda: kullback_normal_kl(mp, sp, mq, sq), None, finish),
        Contender(
            "torch.distributions (default validation)",
            lambda: kl_divergence(Normal(mp, sp), Normal(mq, sq)),
            KULLBACK,
            finish,
        ),
        Contender(
            "naive formula", lambda: naive_normal_kl(mp, sp, mq, sq, torch.log), KULLBACK, finish
        ),
        Contender(KULLBACK_PREBUILT, lambda: kb.kl_divergence(kb_p, kb_q), None, finish),
        Contender(
            "td (prebuilt, no construction)",
            lambda: kl_divergence(td_p, td_q),
            KULLBACK_PREBUILT,
            finish,
        ),
        Contender(
            KULLBACK_LOG, lambda: kullback_normal_kl_from_log_scales(mp, lp, mq, lq), None, finish
        ),
        Contender(
            "torch.distributions (scale = exp(log_scale))",
            lambda: kl_divergence(Normal(mp, torch.exp(lp)), Normal(mq, torch.exp(lq))),
            KULLBACK_LOG,
            finish,
        ),
        Contender(KULLBACK_MIXED, lambda: kullback_normal_kl_mixed(mp, sp, mq, lq), None, finish),
        Contender(
            "torch.distributions (mixed: scale_q = exp(log_scale_q))",
            lambda: kl_divergence(Normal(mp, sp), Normal(mq, torch.exp(lq))),
            KULLBACK_MIXED,
            finish,
        ),
        Contender(KULLBACK_PRIOR, lambda: kullback_normal_kl_to_prior(mp, lp), None, finish),
        Contender(
            "torch.distributions (prior: scale = exp(log_scale))",
            lambda: kl_divergence(Normal(mp, torch.exp(lp)), Normal(0.0, 1.0)),
            KULLBACK_PRIOR,
            finish,
        ),
    ]


def jax_contenders(jax: ModuleType, arrays: Sequence[np.ndarray], *, jit: bool) -> list[Contender]:
    import jax.numpy as jnp

    mp, sp, mq, sq = (jnp.asarray(a) for a in arrays)
    _, lp, _, lq = (jnp.asarray(a) for a in log_scales(arrays))

    def naive(mp: Any, sp: Any, mq: Any, sq: Any) -> Any:
        return naive_normal_kl(mp, sp, mq, sq, jnp.log)

    def naive_log(mp: Any, lp: Any, mq: Any, lq: Any) -> Any:
        return naive_normal_kl_from_log_scales(mp, lp, mq, lq, jnp.exp)

    def naive_mixed(mp: Any, sp: Any, mq: Any, lq: Any) -> Any:
        return naive_normal_kl_mixed(mp, sp, mq, lq, jnp.log, jnp.exp)

    def naive_prior(mp: Any, lp: Any) -> Any:
        return naive_normal_kl_to_prior(mp, lp, jnp.exp)

    fns = [
        kullback_normal_kl,
        naive,
        kullback_normal_kl_from_log_scales,
        naive_log,
        kullback_normal_kl_mixed,
        naive_mixed,
        kullback_normal_kl_to_prior,
        naive_prior,
    ]
    if jit:
        fns = [jax.jit(f) for f in fns]
    kullback_fn, naive_fn, kullback_log_fn, naive_log_fn = fns[:4]
    kullback_mixed_fn, naive_mixed_fn, kullback_prior_fn, naive_prior_fn = fns[4:]
    return [
        Contender(KULLBACK, lambda: kullback_fn(mp, sp, mq, sq).block_until_ready(), None),
        Contender("naive formula", lambda: naive_fn(mp, sp, mq, sq).block_until_ready(), KULLBACK),
        Contender(KULLBACK_LOG, lambda: kullback_log_fn(mp, lp, mq, lq).block_until_ready(), None),
        Contender(
            "naive formula (log-scales)",
            lambda: naive_log_fn(mp, lp, mq, lq).block_until_ready(),
            KULLBACK_LOG,
        ),
        Contender(
            KULLBACK_MIXED, lambda: kullback_mixed_fn(mp, sp, mq, lq).block_until_ready(), None
        ),
        Contender(
            "naive formula (mixed)",
            lambda: naive_mixed_fn(mp, sp, mq, lq).block_until_ready(),
            KULLBACK_MIXED,
        ),
        Contender(KULLBACK_PRIOR, lambda: kullback_prior_fn(mp, lp).block_until_ready(), None),
        Contender(
            "naive formula (prior)",
            lambda: naive_prior_fn(mp, lp).block_until_ready(),
            KULLBACK_PRIOR,
        ),
    ]


def make_logits(shape: tuple[int, int], seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """float32 logits ``a = 2 N(0, 1)`` and ``b = a + 0.01 N(0, 1)``: two near-equal
    Categoricals, as a student near its teacher or a policy near its reference."""
    rng = np.random.default_rng(seed)
    a = 2.0 * rng.standard_normal(shape)
    b = a + 0.01 * rng.standard_normal(shape)
    return a.astype(np.float32), b.astype(np.float32)


def make_log_probs(n: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """float32 log-probabilities of sampled tokens under the policy (``-Exponential(1)``)
    and under the reference (``+ 0.01 N(0, 1)``)."""
    rng = np.random.default_rng(seed)
    log_p = -rng.exponential(1.0, n)
    log_q = log_p + 0.01 * rng.standard_normal(n)
    return log_p.astype(np.float32), log_q.astype(np.float32)


def kullback_categorical_kl(a: Any, b: Any) -> Any:
    """kullback from the raw logits, building the two ``kb.Categorical`` on the way."""
    return kb.kl_divergence(kb.Categorical(a), kb.Categorical(b))


def naive_categorical_kl(a: Any, b: Any, m: ModuleType) -> Any:
    """``sum(exp(lp) * (lp - lq), -1)`` from log-softmaxes with the largest logit
    subtracted first; ``m`` is ``numpy`` or ``jax.numpy``."""

    def log_softmax(x: Any) -> Any:
        shifted = x - m.max(x, axis=-1, keepdims=True)
        return shifted - m.log(m.sum(m.exp(shifted), axis=-1, keepdims=True))

    lp, lq = log_softmax(a), log_softmax(b)
    return m.sum(m.exp(lp) * (lp - lq), axis=-1)


def kl_div_categorical_kl(a: Any, b: Any) -> Any:
    """``KL(p || q)`` through ``torch.nn.functional.kl_div``, as distillation code writes it:
    the input is q's log-probabilities, the target p's."""
    import torch.nn.functional as F

    log_p, log_q = F.log_softmax(a, -1), F.log_softmax(b, -1)
    return F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(-1)


def kullback_k3(log_p: Any, log_q: Any) -> Any:
    return kb.sample_kl(log_p, log_q, estimator="k3")


def naive_k3(log_p: Any, log_q: Any, exp: Callable[[Any], Any]) -> Any:
    """``exp(d) - d - 1`` with ``d = log_q - log_p``, as RLHF trainers write it."""
    d = log_q - log_p
    return exp(d) - d - 1


def to_numpy(t: Any) -> np.ndarray:
    return t.detach().numpy()


def numpy_categorical_contenders(a: np.ndarray, b: np.ndarray) -> list[Contender]:
    return [
        Contender(KULLBACK, lambda: kullback_categorical_kl(a, b), None),
        Contender(
            "naive log-softmax formula",
            lambda: naive_categorical_kl(a, b, np),
            KULLBACK,
            target=TARGET_NUMPY_NAIVE,
        ),
    ]


def torch_categorical_contenders(
    torch: ModuleType, a: np.ndarray, b: np.ndarray
) -> list[Contender]:
    from torch.distributions import Categorical, kl_divergence

    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    return [
        Contender(KULLBACK, lambda: kullback_categorical_kl(ta, tb), None, to_numpy),
        Contender(
            "F.kl_div(log_softmax)",
            lambda: kl_div_categorical_kl(ta, tb),
            KULLBACK,
            to_numpy,
            TARGET_TORCH_KL_DIV,
        ),
        Contender(
            "torch.distributions (default validation)",
            lambda: kl_divergence(Categorical(logits=ta), Categorical(logits=tb)),
            KULLBACK,
            to_numpy,
            TARGET_TORCH_DISTRIBUTIONS,
        ),
    ]


def jax_categorical_contenders(jax: ModuleType, a: np.ndarray, b: np.ndarray) -> list[Contender]:
    import jax.numpy as jnp

    ja, jb = jnp.asarray(a), jnp.asarray(b)
    kullback_fn = jax.jit(kullback_categorical_kl)
    naive_fn = jax.jit(lambda a, b: naive_categorical_kl(a, b, jnp))
    return [
        Contender(KULLBACK, lambda: kullback_fn(ja, jb).block_until_ready(), None),
        Contender(
            "naive log-softmax formula",
            lambda: naive_fn(ja, jb).block_until_ready(),
            KULLBACK,
            target=TARGET_JAX_JIT_NAIVE,
        ),
    ]


class CompileTimeout(Exception):
    pass


def timed_compile(call: Callable[[], Any], timeout_s: float) -> float:
    """Seconds taken by ``call()``, the first call of a compiled function; raises
    ``CompileTimeout`` after ``timeout_s`` (by SIGALRM, where there is one)."""

    def expire(signum: int, frame: Any) -> None:
        raise CompileTimeout(f"did not compile within {timeout_s:.0f} s")

    alarm = hasattr(signal, "SIGALRM")
    if alarm:
        previous = signal.signal(signal.SIGALRM, expire)
        signal.alarm(math.ceil(timeout_s))
    try:
        start = time.perf_counter()
        call()
        return time.perf_counter() - start
    finally:
        if alarm:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)


def failure_reason(error: BaseException) -> str:
    """The timeout, if the compiler's exception wraps one, else the first line of the error."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, CompileTimeout):
            return str(cause)
        cause = cause.__cause__ or cause.__context__
    lines = [line for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def torch_compile_categorical_contenders(
    torch: ModuleType, a: np.ndarray, b: np.ndarray, notes: list[str]
) -> list[Contender]:
    """kullback and the ``F.kl_div`` formula under ``torch.compile``; the compile times go to
    ``notes``, and so does the reason when either does not compile (then nothing is timed)."""
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    case = f"{a.shape}"
    # A cold compilation every run: inductor's on-disk cache would make later runs fast.
    torch._inductor.config.fx_graph_cache = False
    functions = {
        KULLBACK: torch.compile(kullback_categorical_kl, dynamic=False),
        "F.kl_div(log_softmax)": torch.compile(kl_div_categorical_kl, dynamic=False),
    }
    for label, fn in functions.items():
        try:
            seconds = timed_compile(lambda fn=fn: fn(ta, tb), COMPILE_TIMEOUT_S)
        except Exception as error:  # a compiler error of any kind: report it, time nothing
            notes.append(f"torch.compile {case}: {label} skipped: {failure_reason(error)}")
            return []
        notes.append(f"torch.compile {case}: {label} compiled in {seconds:.1f} s (first call)")
    kullback_fn, kl_div_fn = functions.values()
    return [
        Contender(KULLBACK, lambda: kullback_fn(ta, tb), None, to_numpy),
        Contender("F.kl_div(log_softmax)", lambda: kl_div_fn(ta, tb), KULLBACK, to_numpy),
    ]


def numpy_k3_contenders(log_p: np.ndarray, log_q: np.ndarray) -> list[Contender]:
    return [
        Contender(KULLBACK, lambda: kullback_k3(log_p, log_q), None),
        Contender(
            "exp(d) - d - 1",
            lambda: naive_k3(log_p, log_q, np.exp),
            KULLBACK,
            target=TARGET_K3,
        ),
    ]


def torch_k3_contenders(torch: ModuleType, log_p: np.ndarray, log_q: np.ndarray) -> list[Contender]:
    tp, tq = torch.from_numpy(log_p), torch.from_numpy(log_q)
    return [
        Contender(KULLBACK, lambda: kullback_k3(tp, tq), None, to_numpy),
        Contender(
            "exp(d) - d - 1",
            lambda: naive_k3(tp, tq, torch.exp),
            KULLBACK,
            to_numpy,
            TARGET_K3,
        ),
    ]


def jax_k3_contenders(jax: ModuleType, log_p: np.ndarray, log_q: np.ndarray) -> list[Contender]:
    import jax.numpy as jnp

    jp, jq = jnp.asarray(log_p), jnp.asarray(log_q)
    kullback_fn = jax.jit(kullback_k3)
    naive_fn = jax.jit(lambda p, q: naive_k3(p, q, jnp.exp))
    return [
        Contender(KULLBACK, lambda: kullback_fn(jp, jq).block_until_ready(), None),
        Contender(
            "exp(d) - d - 1",
            lambda: naive_fn(jp, jq).block_until_ready(),
            KULLBACK,
            target=TARGET_K3,
        ),
    ]


def check_agreement(contenders: Sequence[Contender]) -> None:
    """Raise if a peer's result differs from its kullback reference: then it is no peer."""
    results = {c.label: c.finish(c.call()) for c in contenders}
    for c in contenders:
        if c.reference is None:
            continue
        ours, theirs = results[c.reference], results[c.label]
        if ours.dtype != theirs.dtype or ours.shape != theirs.shape:
            raise RuntimeError(
                f"{c.label}: result is {theirs.dtype}{theirs.shape}, "
                f"{c.reference} gives {ours.dtype}{ours.shape}"
            )
        if not np.allclose(ours, theirs, rtol=CHECK_RTOL, atol=CHECK_ATOL):
            worst = float(np.max(np.abs(ours.astype(np.float64) - theirs)))
            raise RuntimeError(f"{c.label} disagrees with {c.reference}: max |diff| {worst:.3g}")


def warm_up(call: Callable[[], Any]) -> None:
    start = time.perf_counter()
    calls = 0
    while calls < 3 or time.perf_counter() - start < WARMUP_S:
        call()
        calls += 1


def choose_inner(call: Callable[[], Any]) -> int:
    """Calls per sample so that one sample lasts at least ``MIN_SAMPLE_S``."""
    single = min(time_per_call(call, 1) for _ in range(5))
    return min(MAX_INNER, max(1, math.ceil(MIN_SAMPLE_S / max(single, 1e-9))))


def time_per_call(call: Callable[[], Any], inner: int) -> float:
    start = time.perf_counter()
    for _ in range(inner):
        call()
    return (time.perf_counter() - start) / inner


def run_group(
    family: str, backend: str, case: str, contenders: Sequence[Contender], rounds: int
) -> list[Timing]:
    """Warm up, size inner loops, then time the contenders round-robin."""
    check_agreement(contenders)
    for c in contenders:
        warm_up(c.call)
    inner = [choose_inner(c.call) for c in contenders]
    samples: list[list[float]] = [[] for _ in contenders]
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            for c, k, s in zip(contenders, inner, samples, strict=True):
                s.append(time_per_call(c.call, k))
    finally:
        if gc_was_enabled:
            gc.enable()
    return [
        Timing(family, backend, case, c, k, tuple(s))
        for c, k, s in zip(contenders, inner, samples, strict=True)
    ]


def ratio_to_reference(timing: Timing, group: Sequence[Timing]) -> float | None:
    """Median of the matching kullback contender over this peer's median (None if kullback)."""
    if timing.contender.reference is None:
        return None
    (ours,) = [t for t in group if t.contender.label == timing.contender.reference]
    return ours.median / timing.median


def same_group(timing: Timing, timings: Sequence[Timing]) -> list[Timing]:
    key = (timing.family, timing.backend, timing.case)
    return [u for u in timings if (u.family, u.backend, u.case) == key]


def verdict(ratio: float | None, target: float | None) -> str | None:
    """``pass`` or ``FAIL`` against a ceiling on kullback / peer, or None without one."""
    if ratio is None or target is None:
        return None
    return "pass" if ratio <= target else "FAIL"


def optional_import(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def versions(torch: ModuleType | None, jax: ModuleType | None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "kullback": kb.__version__,
        "torch": None,
        "jax": None,
        # Tuning of glibc's malloc changes the eager times at n = 10**6 (module docstring).
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")} or None,
    }
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_num_threads"] = torch.get_num_threads()
        validate = getattr(torch.distributions.Distribution, "_validate_args", None)
        info["torch_distributions_validate_args_default"] = validate
    if jax is not None:
        info["jax"] = jax.__version__
        info["jax_backend"] = jax.default_backend()
    return info


@dataclass(frozen=True)
class Group:
    """Contenders timed together: one family, one backend, one case (size or shape)."""

    family: str
    backend: str
    case: str
    rounds: int
    build: Callable[[], list[Contender]]


def plan(
    families: Sequence[str],
    quick: bool,
    torch: ModuleType | None,
    jax: ModuleType | None,
    notes: list[str],
) -> list[Group]:
    """The groups to time, in order, for the selected families, skipping missing backends."""
    groups: list[Group] = []
    jax_device = jax.default_backend() if jax is not None else ""
    if "normal" in families:
        rounds = QUICK_ROUNDS if quick else ROUNDS
        for n in SIZES:
            arrays = make_inputs(n)
            case = f"n = {n}"
            groups.append(
                Group("normal", "numpy", case, rounds[n], lambda a=arrays: numpy_contenders(a))
            )
            if torch is not None:
                groups.append(
                    Group(
                        "normal",
                        "torch eager (cpu)",
                        case,
                        rounds[n],
                        lambda a=arrays: torch_contenders(torch, a),
                    )
                )
            if jax is not None:
                for jit in (True, False):
                    groups.append(
                        Group(
                            "normal",
                            f"jax {'jit' if jit else 'eager'} ({jax_device})",
                            case,
                            rounds[n],
                            lambda a=arrays, jit=jit: jax_contenders(jax, a, jit=jit),
                        )
                    )
    if "categorical" in families or "categorical-compile" in families:
        for shape in CATEGORICAL_SHAPES:
            a, b = make_logits(shape)
            case = f"{shape[0]} x {shape[1]}"
            rounds = CATEGORICAL_QUICK_ROUNDS if quick else CATEGORICAL_ROUNDS
            if "categorical" in families:
                groups.append(
                    Group(
                        "categorical",
                        "numpy",
                        case,
                        rounds,
                        lambda a=a, b=b: numpy_categorical_contenders(a, b),
                    )
                )
                if torch is not None:
                    groups.append(
                        Group(
                            "categorical",
                            "torch eager (cpu)",
                            case,
                            rounds,
                            lambda a=a, b=b: torch_categorical_contenders(torch, a, b),
                        )
                    )
                if jax is not None:
                    groups.append(
                        Group(
                            "categorical",
                            f"jax jit ({jax_device})",
                            case,
                            rounds,
                            lambda a=a, b=b: jax_categorical_contenders(jax, a, b),
                        )
                    )
            if "categorical-compile" in families and torch is not None:
                groups.append(
                    Group(
                        "categorical",
                        "torch.compile (cpu)",
                        case,
                        COMPILE_QUICK_ROUNDS if quick else COMPILE_ROUNDS,
                        lambda a=a, b=b: torch_compile_categorical_contenders(torch, a, b, notes),
                    )
                )
    if "k3" in families:
        if not hasattr(kb, "sample_kl"):
            notes.append("k3 skipped: this kullback has no sample_kl")
        else:
            log_p, log_q = make_log_probs(K3_SIZE)
            case = f"n = {K3_SIZE}"
            rounds = K3_QUICK_ROUNDS if quick else K3_ROUNDS
            groups.append(
                Group("k3", "numpy", case, rounds, lambda: numpy_k3_contenders(log_p, log_q))
            )
            if torch is not None:
                groups.append(
                    Group(
                        "k3",
                        "torch eager (cpu)",
                        case,
                        rounds,
                        lambda: torch_k3_contenders(torch, log_p, log_q),
                    )
                )
            if jax is not None:
                groups.append(
                    Group(
                        "k3",
                        f"jax jit ({jax_device})",
                        case,
                        rounds,
                        lambda: jax_k3_contenders(jax, log_p, log_q),
                    )
                )
    return groups


def format_ms(seconds: float) -> str:
    return f"{seconds * 1e3:.4g}"


def markdown_table(timings: Sequence[Timing]) -> str:
    header = (
        "| family | backend | case | contender | median (ms) | IQR | kullback / peer | target |\n"
        "|---|---|---|---|---:|---:|---:|---|"
    )
    rows = [header]
    for t in timings:
        ratio = ratio_to_reference(t, same_group(t, timings))
        shown = "ref" if ratio is None else f"**{ratio:.2f}**"
        target = t.contender.target
        judged = verdict(ratio, target)
        goal = "" if judged is None else f"<= {target:g}x: {judged}"
        rows.append(
            f"| {t.family} | {t.backend} | {t.case} | {t.contender.label} "
            f"| {format_ms(t.median)} | {t.iqr_percent:.0f}% | {shown} | {goal} |"
        )
    return "\n".join(rows)


def results_json(
    timings: Sequence[Timing],
    info: dict[str, Any],
    quick: bool,
    families: Sequence[str],
    notes: Sequence[str],
) -> dict[str, Any]:
    results = []
    for t in timings:
        ratio = ratio_to_reference(t, same_group(t, timings))
        results.append(
            {
                "family": t.family,
                "backend": t.backend,
                "case": t.case,
                "contender": t.contender.label,
                "reference": t.contender.reference,
                "median_ms": t.median * 1e3,
                "iqr_percent": t.iqr_percent,
                "ratio_kullback_over_peer": ratio,
                "target": t.contender.target,
                "verdict": verdict(ratio, t.contender.target),
                "rounds": len(t.samples),
                "inner_calls_per_sample": t.inner,
                "samples_ms": [s * 1e3 for s in t.samples],
            }
        )
    setup = {
        "dtype": "float32",
        "seed": SEED,
        "families": list(families),
        "normal_sizes": list(SIZES),
        "categorical_shapes": [list(shape) for shape in CATEGORICAL_SHAPES],
        "k3_size": K3_SIZE,
        "quick": quick,
    }
    return {"environment": info, "setup": setup, "notes": list(notes), "results": results}


def families_argument(text: str) -> list[str]:
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in FAMILIES]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown family {', '.join(unknown) or repr(text)}; choose from {', '.join(FAMILIES)}"
        )
    return chosen


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="few rounds: a smoke test")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument(
        "--only",
        metavar="FAMILY[,FAMILY]",
        type=families_argument,
        default=list(FAMILIES),
        help=f"run these families only (default: all): {', '.join(FAMILIES)}",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch = optional_import("torch")
    jax = optional_import("jax")
    info = versions(torch, jax)

    families = args.only
    print(f"# kullback benchmark: {', '.join(families)}; float32, interleaved medians\n")
    for key, value in info.items():
        print(f"- {key}: {value}")
    print()
    if torch is None:
        print("> note: torch is not importable; the torch sections are skipped.\n")
    if jax is None:
        print("> note: jax is not importable; the jax sections are skipped.\n")

    notes: list[str] = []
    timings: list[Timing] = []
    for group in plan(families, args.quick, torch, jax, notes):
        print(
            f"timing {group.family}, {group.backend}, {group.case}, {group.rounds} rounds ...",
            file=sys.stderr,
            flush=True,
        )
        contenders = group.build()
        if contenders:
            timings += run_group(group.family, group.backend, group.case, contenders, group.rounds)

    print(markdown_table(timings))
    print(
        "\nkullback / peer: the matching kullback contender's median over the peer's "
        "(< 1: kullback is faster). 'td (prebuilt, no construction)' is compared with "
        "'kullback (prebuilt)', the log-scale peers with 'kullback (log_scale)', the mixed "
        "ones with 'kullback (mixed)', the prior ones with 'kullback (prior N(0, 1))', every "
        "other peer with 'kullback'. IQR: interquartile range of the samples, in % of the "
        "median. target: the largest ratio the issue accepts, where it set one."
    )
    for note in notes:
        print(f"\n> {note}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results_json(timings, info, args.quick, families, notes), f, indent=2)
        print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
