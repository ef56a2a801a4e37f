"""Dask: the KL is a lazy graph until .compute(), and computes the NumPy values.

In every dtype of the fixture, float16 included (computed in float32 chunk by chunk and
rounded once, as NumPy does).
"""

from __future__ import annotations

import numpy as np
import pytest

import kullback as kb
from tests.conftest import dtype_name, finfo, is_half


def sum_order_rtol(dtype, ulps):
    """The tolerance between a chunked sum and NumPy's: ``ulps`` eps for float32 and
    float64; for float16, summed in float32 and rounded once, 1 eps (two float32 sums this
    close round to the same float16 or to neighbours)."""
    return float(finfo(dtype).eps) * (1 if is_half(dtype) else ulps)


@pytest.fixture
def dask(backend):
    if backend.name != "dask":
        pytest.skip("laziness is a Dask capability")
    import dask

    return dask


def test_nothing_computed_before_compute(dask, dtype):
    import dask.array as da
    from dask.callbacks import Callback

    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(6, 8)) for _ in range(4)]
    chunked = [da.from_array(a.astype(dtype_name(dtype)), chunks=(3, 4)) for a in arrays]
    executed = []

    class Record(Callback):
        def _pretask(self, key, dsk, state):
            executed.append(key)

    with Record():
        p = kb.Normal(chunked[0], log_scale=chunked[1])
        q = kb.Normal(chunked[2], da.exp(chunked[3]))
        lazy = kb.kl_divergence(p, q, axis=-1)
        assert executed == [], "kullback computed something eagerly"
        assert isinstance(lazy, da.Array)
        assert lazy.shape == (6,)
        got = lazy.compute()
    assert executed, "compute() ran no task"
    expected = kb.kl_divergence(
        kb.Normal(
            arrays[0].astype(dtype_name(dtype)), log_scale=arrays[1].astype(dtype_name(dtype))
        ),
        kb.Normal(arrays[2].astype(dtype_name(dtype)), np.exp(arrays[3].astype(dtype_name(dtype)))),
        axis=-1,
    )
    # the chunked sum adds in another order than NumPy's pairwise sum
    assert got.dtype == expected.dtype == np.dtype(dtype_name(dtype))
    np.testing.assert_allclose(got, expected, rtol=sum_order_rtol(dtype, 4), atol=0)


@pytest.mark.parametrize("parameterization", ["scale-scale", "log-log", "scale-log", "prior"])
def test_unknown_chunk_sizes(dask, dtype, parameterization):
    """Arrays of unknown length (after boolean masking: shape (nan,)) give the NumPy values."""
    import dask.array as da

    name = dtype_name(dtype)
    rng = np.random.default_rng(2)
    loc = rng.normal(size=40).astype(name)
    scale = np.exp(0.3 * rng.normal(size=40)).astype(name)
    keep = loc > -0.5

    def pair(loc_p, scale_p, scale_q):
        if parameterization == "scale-scale":
            return kb.Normal(loc_p, scale_p), kb.Normal(0.0, 1.5 * scale_q)
        if parameterization == "log-log":
            return kb.Normal(loc_p, log_scale=scale_p), kb.Normal(0.0, log_scale=scale_q)
        if parameterization == "scale-log":
            return kb.Normal(loc_p, scale_p), kb.Normal(0.0, log_scale=0.5 * scale_q)
        return kb.Normal(loc_p, log_scale=scale_p), kb.Normal(0.0, 1.0)

    chunked = [da.from_array(a, chunks=10) for a in (loc, scale)]
    mask = da.from_array(keep, chunks=10)
    masked = [a[mask] for a in chunked]
    assert np.isnan(masked[0].shape[0])
    lazy = kb.kl_divergence(*pair(masked[0], masked[1], masked[1]))
    expected = kb.kl_divergence(*pair(loc[keep], scale[keep], scale[keep]))
    got = np.asarray(lazy.compute())
    assert got.dtype == np.asarray(expected).dtype == np.dtype(name)
    np.testing.assert_array_equal(got, np.asarray(expected))


def test_categorical_chunked_along_both_axes(dask, dtype):
    """A (rows, K) Categorical chunked along rows and categories stays lazy and gives the
    NumPy values."""
    import dask.array as da
    from dask.callbacks import Callback

    name = dtype_name(dtype)
    rng = np.random.default_rng(4)
    a = rng.normal(size=(9, 40)).astype(name)
    b = (a + 0.01 * rng.normal(size=a.shape)).astype(name)
    executed = []

    class Record(Callback):
        def _pretask(self, key, dsk, state):
            executed.append(key)

    with Record():
        p = kb.Categorical(da.from_array(a, chunks=(4, 16)))
        q = kb.Categorical(probs=da.exp(da.from_array(b, chunks=(4, 16))))
        lazy = kb.kl_divergence(p, q)
        k3 = kb.sample_kl(da.from_array(a, chunks=(4, 16)), da.from_array(b, chunks=(4, 16)))
        assert executed == [], "kullback computed something eagerly"
        assert isinstance(lazy, da.Array)
        assert lazy.shape == (9,)
        got = lazy.compute()
    expected = kb.kl_divergence(kb.Categorical(a), kb.Categorical(probs=np.exp(b)))
    assert got.dtype == expected.dtype == np.dtype(name)
    np.testing.assert_allclose(got, expected, rtol=sum_order_rtol(dtype, 8), atol=0)
    k3_values = k3.compute()
    assert k3_values.dtype == np.dtype(name)
    np.testing.assert_array_equal(k3_values, kb.sample_kl(a, b))
