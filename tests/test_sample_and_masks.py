"""sample_kl against mpmath; where=/reduction= for every pair.

Every test runs in every dtype of the fixture, the half dtypes included (computed in
float32 and rounded once: within 1 ulp of the half dtype).
"""

from __future__ import annotations

import numpy as np
import pytest

import kullback as kb
from tests.conftest import assert_array, dtype_name, finfo, is_half, ulp_bound
from tests.reference.categorical import sample_kl_sweep, working_dtype_name
from tests.reference.normal import ulp_errors

BOUNDS = {"k1": 1.0, "k2": 2.0, "k3": 3.0}


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_sample_kl_accuracy(backend, xp, dtype, estimator):
    """k1 within 1 ulp, k2 within 2, k3 within 3 (each 1 ulp of the half dtypes), for
    differences from 1e-12 (the half dtypes: eps/64) to ±80 (where k3 overflows float16:
    +inf)."""
    name = dtype_name(dtype)
    sweep = sample_kl_sweep(name)
    result = kb.sample_kl(
        backend.asarray(sweep.log_p, dtype), backend.asarray(sweep.log_q, dtype),
        estimator=estimator,
    )  # fmt: skip
    assert_array(result, xp=xp, dtype=dtype, shape=sweep.log_p.shape)
    got = backend.to_numpy(result)
    exact = list(getattr(sweep, estimator))
    if backend.flushes_subnormals:
        # results below the normal range of the dtype computed in are flushed to 0 (float16's
        # subnormals are normal in float32: the rounding of a float32 result, not flushed)
        tiny = float(finfo(working_dtype_name(name)).smallest_normal)
        keep = [i for i, e in enumerate(exact) if not (0 < abs(float(e)) < tiny)]
        got, exact = got[keep], [exact[i] for i in keep]
    if estimator != "k1":
        assert not np.any(got < 0)
    errors = ulp_errors(got, exact, np.dtype(name).type)
    worst = int(np.argmax(errors))
    assert errors[worst] <= ulp_bound(dtype, BOUNDS[estimator]), (errors[worst], worst)


def test_sample_kl_special_values(backend, dtype):
    """An infinite difference gives +inf (whichever side is infinite), as does a finite one
    whose estimate overflows (``-d - 1`` for ``d = -1.8 max``, ``e**d`` for ``d = 1.8 max``,
    and for ``d`` just large enough, where ``lo`` is -2 or less); log-densities beyond half
    the largest float are exact like any others; NaN and ``inf - inf`` give NaN."""
    top = float(finfo(dtype).max)
    digits = finfo(dtype).nmant + 1
    rows = [  # (log_p, log_q, exact estimate or None for +inf)
        (0.0, -np.inf, None),
        (0.0, np.inf, None),
        (np.inf, 0.0, None),
        (-np.inf, 0.0, None),
        (0.9 * top, -0.9 * top, None),
        (-0.9 * top, 0.9 * top, None),
        (3.0, 2.0 ** (digits + 2) * (1 + 2.0 ** (1 - digits)), None),  # hi + lo, lo < -2
        (0.7 * top, 0.8 * top, None),
        (0.8 * top, 0.6 * top, "-d"),  # -d - 1 rounds to -d
        (0.3 * top, -0.3 * top, "-d"),
        (0.0, -top, "-d"),
    ]
    p = np.array([r[0] for r in rows], dtype=dtype_name(dtype))
    q = np.array([r[1] for r in rows], dtype=dtype_name(dtype))
    got = backend.to_numpy(kb.sample_kl(backend.asarray(p, dtype), backend.asarray(q, dtype)))
    for (_, _, exact), x, y, value in zip(rows, p, q, got, strict=True):
        if exact is None:
            assert value == np.inf, (x, y, value)
        else:  # |d| is far beyond 2**digits: -d - 1 rounds to -d, which is a float
            d = float(y) - float(x)
            assert float(value) == -d, (x, y, value)
    log_p = backend.asarray([-np.inf, 1.0, np.nan], dtype)
    log_q = backend.asarray([-np.inf, np.nan, 0.0], dtype)
    assert np.all(np.isnan(backend.to_numpy(kb.sample_kl(log_p, log_q))))
    with pytest.raises(ValueError, match="estimator"):
        kb.sample_kl(log_p, log_q, estimator="k4")


def garbage_rows(name):
    a = np.array([[0.0, 1.0, -2.0], [np.nan, np.inf, -np.inf], [0.5, 0.5, 0.0]], dtype=name)
    b = np.array([[0.5, 0.0, -1.0], [np.inf, np.nan, 3.0], [0.0, 0.0, 0.0]], dtype=name)
    return a, b, np.array([True, False, True])


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_masked_rows_contribute_nothing(backend, xp, dtype, reduction):
    """Masked entries holding NaN/inf give exactly the KL of the unmasked ones (up to the
    order of the sum; the half dtypes reduce in float32 and round once, so within half an
    ulp of the half dtype of that reduction of the unmasked KLs)."""
    name = dtype_name(dtype)
    a, b, keep = garbage_rows(name)
    mask = backend.xp.asarray(keep) if backend.name != "dask" else None
    if mask is None:
        import dask.array as da

        mask = da.from_array(keep)
    p = kb.Categorical(backend.asarray(a, dtype))
    q = kb.Categorical(backend.asarray(b, dtype))
    got = kb.kl_divergence(p, q, axis=0, where=mask, reduction=reduction)
    assert_array(got, xp=xp, dtype=dtype, shape=())
    working = working_dtype_name(name)
    clean = backend.to_numpy(
        kb.kl_divergence(
            kb.Categorical(backend.asarray(a[keep].astype(working), working)),
            kb.Categorical(backend.asarray(b[keep].astype(working), working)),
        )
    )  # the half inputs are exact in float32
    expected = clean.sum() if reduction == "sum" else clean.mean()
    rounding = float(finfo(name).eps) / 2 if is_half(name) else 0.0
    np.testing.assert_allclose(
        backend.to_numpy(got).astype(np.float64), expected, rtol=1e-6 + rounding
    )
    elementwise = backend.to_numpy(kb.kl_divergence(p, q, where=mask))
    assert elementwise[1] == 0


def test_mean_of_nothing_is_zero(backend, dtype):
    normal = kb.Normal(backend.asarray([np.nan, 1.0], dtype), backend.asarray([1.0, -1.0], dtype))
    keep = np.array([False, False])
    mask = backend.xp.asarray(keep) if backend.name != "dask" else None
    if mask is None:
        import dask.array as da

        mask = da.from_array(keep)
    got = kb.kl_divergence(normal, kb.Normal(0.0, 1.0), axis=-1, where=mask, reduction="mean")
    assert backend.to_numpy(got) == 0
    got = kb.sample_kl(
        backend.asarray([np.nan, 1.0], dtype), backend.asarray([0.0, np.inf], dtype),
        axis=0, where=mask, reduction="mean",
    )  # fmt: skip
    assert backend.to_numpy(got) == 0


def test_bad_reduction_and_mask(backend, dtype):
    p = kb.Normal(backend.asarray([0.0], dtype), 1.0)
    with pytest.raises(ValueError, match="reduction"):
        kb.kl_divergence(p, p, axis=0, reduction="max")
    with pytest.raises(TypeError, match="boolean"):
        kb.kl_divergence(p, p, where=backend.asarray([1.0], dtype))


def test_large_k3_in_slices_is_identical(backend, dtype):
    """Eager CPU backends evaluate k3 in cache-sized slices: bit for bit the whole kernel
    (for the half dtypes, the whole kernel in float32, rounded once)."""
    from kullback import _namespace, estimators

    name = dtype_name(dtype)
    xp = backend.xp
    rng = np.random.default_rng(5)
    log_p = rng.normal(-5.0, 2.0, 3 * 2**17 + 5).astype(name)
    log_q = (log_p + rng.normal(0.0, 0.1, log_p.shape)).astype(name)
    p, q = backend.asarray(log_p, dtype), backend.asarray(log_q, dtype)
    got = backend.to_numpy(kb.sample_kl(p, q))
    # the whole kernel (one compiled kernel on JAX, which does not slice)
    working = getattr(xp, working_dtype_name(name))
    kernel = _namespace.compiled(estimators._k3, xp)
    whole = kernel(xp.astype(p, working), xp.astype(q, working))
    np.testing.assert_array_equal(got, backend.to_numpy(xp.astype(whole, dtype)))
