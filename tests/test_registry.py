"""register_kl: user pairs, most-specific lookup, and the arguments a KL function gets."""

from __future__ import annotations

import numpy as np
import pytest

import kullback as kb
from tests.conftest import assert_array


class Exponential(kb.Distribution):
    _parameter_names = ("rate",)

    def __init__(self, rate):
        super().__init__(rate=rate)


class SlowExponential(Exponential):
    pass


@kb.register_kl(Exponential, Exponential)
def _kl_exponential(p, q, *, xp):
    ratio = q.rate / p.rate
    return ratio - 1 - xp.log(ratio)  # deliberately naive: this tests dispatch only


@kb.register_kl(SlowExponential, Exponential)
def _kl_slow_exponential(p, q, *, xp):
    return xp.zeros_like(p.rate + q.rate)


def test_user_pair_receives_converted_parameters(backend, xp, dtype):
    p = Exponential(backend.asarray(np.array([1.0, 2.0]), dtype))
    result = kb.kl_divergence(p, Exponential(2.0), axis=-1)
    assert_array(result, xp=xp, dtype=dtype, shape=())
    assert float(backend.to_numpy(result)) == pytest.approx(1 - np.log(2) + 0, rel=1e-6)


def test_most_specific_pair_wins(backend, dtype):
    rate = backend.asarray(np.array([1.0, 2.0]), dtype)
    np.testing.assert_array_equal(
        backend.to_numpy(kb.kl_divergence(SlowExponential(rate), Exponential(3.0))), [0, 0]
    )
    # the subclass as q falls back to the base pair
    got = backend.to_numpy(kb.kl_divergence(Exponential(rate), SlowExponential(1.0)))
    np.testing.assert_allclose(got, [0.0, 0.5 - np.log(0.5) - 1], rtol=1e-6)


def test_register_requires_distribution_types():
    with pytest.raises(TypeError, match=r"subclasses of kullback\.Distribution"):
        kb.register_kl(float, Exponential)


def test_large_batches_evaluate_in_slices_identically(backend, xp, dtype, monkeypatch):
    """Eager CPU backends evaluate big batches in slices along axis 0; values are unchanged.

    Parameters with a missing or size-1 leading axis (broadcast) are passed whole.
    """
    import kullback._registry as registry

    rng = np.random.default_rng(5)
    loc_p = backend.asarray(rng.normal(size=(300, 1000)), dtype)
    scale_p = backend.asarray(np.exp(0.1 * rng.normal(size=(1000,))), dtype)
    loc_q = backend.asarray(rng.normal(size=(300, 1)), dtype)
    p, q = kb.Normal(loc_p, scale_p), kb.Normal(loc_q, 1.5)
    sliced = backend.to_numpy(kb.kl_divergence(p, q, axis=-1))
    monkeypatch.setattr(registry._namespace, "eager_slice_size", lambda xp, device: None)
    whole = backend.to_numpy(kb.kl_divergence(p, q, axis=-1))
    np.testing.assert_array_equal(sliced, whole)
    assert sliced.shape == (300,)
