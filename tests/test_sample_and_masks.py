"""sample_kl against mpmath; where=/reduction= for every pair; half precision."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import kullback as kb
from tests.conftest import assert_array, dtype_name
from tests.reference.categorical import sample_kl_sweep
from tests.reference.normal import ulp_errors

BOUNDS = {"k1": 1.0, "k2": 2.0, "k3": 3.0}


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_sample_kl_accuracy(backend, xp, dtype, estimator):
    """k1 within 1 ulp, k2 within 2, k3 within 3, for differences from 1e-12 to ±80."""
    name = dtype_name(dtype)
    sweep = sample_kl_sweep(name)
    result = kb.sample_kl(
        backend.asarray(sweep.log_p, dtype), backend.asarray(sweep.log_q, dtype),
        estimator=estimator,
    )  # fmt: skip
    assert_array(result, xp=xp, dtype=dtype, shape=sweep.log_p.shape)
    got = backend.to_numpy(result)
    exact = list(getattr(sweep, estimator))
    if backend.flushes_subnormals:  # results below the normal range are flushed to 0
        tiny = float(ml_dtypes.finfo(name).smallest_normal)
        keep = [i for i, e in enumerate(exact) if not (0 < abs(float(e)) < tiny)]
        got, exact = got[keep], [exact[i] for i in keep]
    if estimator != "k1":
        assert not np.any(got < 0)
    errors = ulp_errors(got, exact, np.dtype(name).type)
    worst = int(np.argmax(errors))
    assert errors[worst] <= BOUNDS[estimator], (errors[worst], worst)


def test_sample_kl_special_values(backend, dtype):
    log_p = backend.asarray([0.0, 0.0, -np.inf, 1.0], dtype)
    log_q = backend.asarray([-np.inf, np.inf, -np.inf, np.nan], dtype)
    got = backend.to_numpy(kb.sample_kl(log_p, log_q))
    assert got[0] == np.inf
    assert got[1] == np.inf
    assert np.all(np.isnan(got[2:]))
    with pytest.raises(ValueError, match="estimator"):
        kb.sample_kl(log_p, log_q, estimator="k4")


def garbage_rows(name):
    a = np.array([[0.0, 1.0, -2.0], [np.nan, np.inf, -np.inf], [0.5, 0.5, 0.0]], dtype=name)
    b = np.array([[0.5, 0.0, -1.0], [np.inf, np.nan, 3.0], [0.0, 0.0, 0.0]], dtype=name)
    return a, b, np.array([True, False, True])


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_masked_rows_contribute_nothing(backend, xp, dtype, reduction):
    """Masked entries holding NaN/inf give exactly the KL of the unmasked ones."""
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
    clean = backend.to_numpy(
        kb.kl_divergence(
            kb.Categorical(backend.asarray(a[keep], dtype)),
            kb.Categorical(backend.asarray(b[keep], dtype)),
        )
    )
    expected = clean.sum() if reduction == "sum" else clean.mean()
    np.testing.assert_allclose(backend.to_numpy(got), expected, rtol=1e-6)
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


HALF = ["float16", "bfloat16"]


@pytest.mark.parametrize("half", HALF)
def test_half_precision_within_one_ulp(backend, xp, half):
    """float16/bfloat16 inputs are computed in float32 and returned in their dtype, within
    1 ulp of the half dtype, never negative (a near-equal bfloat16 KL is not negative)."""
    dtype = getattr(xp, half, None)
    if dtype is None or (backend.name == "numpy" and half == "bfloat16"):
        pytest.skip(f"{backend.name} has no {half}")
    import mpmath

    rng = np.random.default_rng(0)
    a32 = rng.normal(size=(6, 5)).astype(np.float32)
    b32 = (a32 + 0.01 * rng.normal(size=a32.shape)).astype(np.float32)
    half_np = "float16" if half == "float16" else None
    a = backend.xp.astype(backend.asarray(a32, xp.float32), dtype)
    b = backend.xp.astype(backend.asarray(b32, xp.float32), dtype)
    result = kb.kl_divergence(kb.Categorical(a), kb.Categorical(b))
    assert_array(result, xp=xp, dtype=dtype, shape=(6,))
    got = backend.to_numpy(xp.astype(result, xp.float32))
    assert np.all(got > 0)
    exact_inputs = (
        backend.to_numpy(xp.astype(a, xp.float32)),
        backend.to_numpy(xp.astype(b, xp.float32)),
    )
    from tests.reference.categorical import kl_categorical

    for row, value in enumerate(got):
        exact = kl_categorical(
            p_logits=exact_inputs[0][row].tolist(), q_logits=exact_inputs[1][row].tolist()
        )
        bits = 11 if half_np else 8
        smallest = 2.0**-24 if half_np else 2.0**-133  # subnormal spacing
        ulp = max(2.0 ** (int(mpmath.floor(mpmath.log(exact, 2))) - bits + 1), smallest)
        assert abs(value - float(exact)) <= ulp
    # the other public functions keep the dtype too
    normal = kb.Normal(a, b * 0 + 1)
    assert kb.kl_divergence(normal, kb.Normal(0.0, 1.0)).dtype == dtype
    assert kb.sample_kl(a, b).dtype == dtype
    assert kb.special.expm1mx(a).dtype == dtype


def test_large_k3_in_slices_is_identical(backend, dtype):
    """Eager CPU backends evaluate k3 in cache-sized slices: bit for bit the whole kernel."""
    from kullback import _namespace, estimators

    name = dtype_name(dtype)
    rng = np.random.default_rng(5)
    log_p = rng.normal(-5.0, 2.0, 3 * 2**17 + 5).astype(name)
    log_q = (log_p + rng.normal(0.0, 0.1, log_p.shape)).astype(name)
    p, q = backend.asarray(log_p, dtype), backend.asarray(log_q, dtype)
    got = backend.to_numpy(kb.sample_kl(p, q))
    # the whole kernel (one compiled kernel on JAX, which does not slice)
    whole = backend.to_numpy(_namespace.compiled(estimators._k3, backend.xp)(p, q))
    np.testing.assert_array_equal(got, whole)


@pytest.mark.parametrize("half", HALF)
def test_half_precision_values_of_every_function(backend, xp, half):
    """Normal, Bernoulli, k3 and expm1mx in float16/bfloat16: within 1 ulp of the half dtype
    of the exact value on the half inputs."""
    dtype = getattr(xp, half, None)
    if dtype is None or (backend.name == "numpy" and half == "bfloat16"):
        pytest.skip(f"{backend.name} has no {half}")
    from tests.reference.categorical import kl_bernoulli, sample_k3
    from tests.reference.normal import expm1mx as exact_expm1mx
    from tests.reference.normal import kl_normal

    rng = np.random.default_rng(1)
    x32 = rng.normal(size=8).astype(np.float32)
    y32 = (x32 + 0.05 * rng.normal(size=8)).astype(np.float32)

    def half_array(values):
        return xp.astype(backend.asarray(values, xp.float32), dtype)

    x, y = half_array(x32), half_array(y32)
    xs = backend.to_numpy(xp.astype(x, xp.float32)).tolist()
    ys = backend.to_numpy(xp.astype(y, xp.float32)).tolist()
    cases = {
        "normal": (
            kb.kl_divergence(kb.Normal(x, log_scale=y), kb.Normal(0.0, 1.0)),
            [
                kl_normal(a, 0.0, log_scale_p=b, log_scale_q=0.0)
                for a, b in zip(xs, ys, strict=True)
            ],
        ),
        "bernoulli": (
            kb.kl_divergence(kb.Bernoulli(x), kb.Bernoulli(y)),
            [kl_bernoulli(p_logit=a, q_logit=b) for a, b in zip(xs, ys, strict=True)],
        ),
        "k3": (kb.sample_kl(x, y), [sample_k3(a, b) for a, b in zip(xs, ys, strict=True)]),
        "expm1mx": (kb.special.expm1mx(x), [exact_expm1mx(a) for a in xs]),
    }
    bits = 11 if half == "float16" else 8
    smallest = 2.0**-24 if half == "float16" else 2.0**-133
    for name, (result, exact) in cases.items():
        assert result.dtype == dtype, name
        got = backend.to_numpy(xp.astype(result, xp.float32))
        for value, want in zip(got, exact, strict=True):
            want = float(want)
            ulp = (
                max(2.0 ** (np.floor(np.log2(abs(want))) - bits + 1), smallest)
                if want
                else smallest
            )
            assert abs(value - want) <= ulp, (name, value, want)
