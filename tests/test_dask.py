"""Dask: the KL is a lazy graph until .compute(), and computes the NumPy values."""

from __future__ import annotations

import numpy as np
import pytest

import kullback as kb
from tests.conftest import dtype_name


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
    np.testing.assert_allclose(got, expected, rtol=4 * np.finfo(dtype_name(dtype)).eps, atol=0)
