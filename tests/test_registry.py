"""register_kl: user pairs, most-specific lookup, and the arguments a KL function gets."""

from __future__ import annotations

from typing import ClassVar

import array_api_compat
import numpy as np
import pytest

import kullback as kb
from kullback._registry import shared_across_slices
from tests.conftest import assert_array, dtype_name, finfo, is_half


class Exponential(kb.Distribution):
    _parameter_names = ("rate",)
    # (namespace, dtype) of each parameter a KL function of this family received
    received: ClassVar[list[tuple]] = []

    def __init__(self, rate):
        super().__init__(rate=rate)


class SlowExponential(Exponential):
    pass


@kb.register_kl(Exponential, Exponential)
def _kl_exponential(p, q, *, xp):
    Exponential.received += [
        (array_api_compat.array_namespace(d.rate), d.rate.dtype) for d in (p, q)
    ]
    ratio = q.rate / p.rate
    return ratio - 1 - xp.log(ratio)  # deliberately naive: this tests dispatch only


@kb.register_kl(SlowExponential, Exponential)
def _kl_slow_exponential(p, q, *, xp):
    return xp.zeros_like(p.rate + q.rate)


def relative_tolerance(dtype) -> float:
    """1e-6 for these naive float32 and float64 formulas; 1 ulp (eps) for half inputs,
    whose result is the float32 one rounded once."""
    return float(finfo(dtype).eps) if is_half(dtype) else 1e-6


def test_user_pair_receives_converted_parameters(backend, xp, dtype):
    """A registered pair receives every parameter, a Python number included, as an array of
    the namespace in the working dtype, and its result is returned in the parameters' dtype.

    The working dtype is the parameters' own, except for half precision (float16,
    bfloat16): there a user pair receives float32 arrays, exactly what the library's own
    pairs receive, so that it computes as they do (in float32, the half dtypes' accumulator)
    and its result is rounded to the half dtype once, by ``kl_divergence``, after the
    reduction over ``axis``.
    """
    Exponential.received.clear()
    p = Exponential(backend.asarray(np.array([1.0, 2.0]), dtype))
    result = kb.kl_divergence(p, Exponential(2.0), axis=-1)
    assert_array(result, xp=xp, dtype=dtype, shape=())
    working = xp.float32 if is_half(dtype) else dtype
    assert Exponential.received == [(xp, working), (xp, working)]
    expected = 1 - np.log(2) + 0
    assert float(backend.to_numpy(result)) == pytest.approx(expected, rel=relative_tolerance(dtype))


def test_most_specific_pair_wins(backend, dtype):
    rate = backend.asarray(np.array([1.0, 2.0]), dtype)
    np.testing.assert_array_equal(
        backend.to_numpy(kb.kl_divergence(SlowExponential(rate), Exponential(3.0))), [0, 0]
    )
    # the subclass as q falls back to the base pair
    got = backend.to_numpy(kb.kl_divergence(Exponential(rate), SlowExponential(1.0)))
    expected = [0.0, 0.5 - np.log(0.5) - 1]
    np.testing.assert_allclose(got.astype(np.float64), expected, rtol=relative_tolerance(dtype))


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


class Counted(kb.Distribution):
    """A pair whose KL counts the work it shares across the slices of one evaluation."""

    _parameter_names = ("value",)
    calls: ClassVar[list[int]] = []

    def __init__(self, value):
        super().__init__(value=value)


@kb.register_kl(Counted, Counted)
def _kl_counted(p, q, *, xp):
    def compute():
        Counted.calls.append(1)
        return 2.0 * q.value

    return p.value - shared_across_slices(q.value, "doubled", compute)


@pytest.mark.parametrize("shared", [True, False], ids=["broadcast q", "sliced q"])
def test_work_on_broadcast_parameters_is_shared_across_slices(backend, dtype, monkeypatch, shared):
    """A parameter passed whole to every slice is worked on once per evaluation; a sliced
    one once per slice, each slice with its own values (no mix-up of arrays by id).  The
    values are those of the inputs in the dtype (exact in float64): to 1e-5, or to 1 ulp
    for half inputs (computed in float32 and rounded once)."""
    import kullback._registry as registry

    monkeypatch.setattr(registry._namespace, "eager_slice_size", lambda xp, device: 8)
    name = dtype_name(dtype)
    rng = np.random.default_rng(1)
    p_value = rng.normal(size=(40, 3)).astype(name).astype(np.float64)
    q_value = rng.normal(size=(1, 3) if shared else (40, 3)).astype(name).astype(np.float64)
    Counted.calls.clear()
    got = kb.kl_divergence(
        Counted(backend.asarray(p_value, dtype)), Counted(backend.asarray(q_value, dtype))
    )
    expected = p_value - 2.0 * q_value
    if is_half(dtype):
        info = finfo(dtype)
        tolerance = {"rtol": float(info.eps), "atol": float(info.smallest_subnormal)}
    else:
        tolerance = {"atol": 1e-5}
    np.testing.assert_allclose(backend.to_numpy(got).astype(np.float64), expected, **tolerance)
    assert len(Counted.calls) == (1 if shared else 20)
    Counted.calls.clear()
    kb.kl_divergence(
        Counted(backend.asarray(p_value, dtype)), Counted(backend.asarray(q_value, dtype))
    )
    assert len(Counted.calls) == (1 if shared else 20)  # nothing kept between evaluations


def test_mixed_normal_with_a_shared_scale_evaluates_in_slices_identically(
    backend, dtype, monkeypatch
):
    """The VAE prior N(0, 1) by scale against log-scales: sliced, its log words are computed
    once and shared; the values equal those of the whole batch."""
    import kullback._registry as registry

    rng = np.random.default_rng(6)
    p = kb.Normal(
        backend.asarray(rng.normal(size=(300, 64)), dtype),
        log_scale=backend.asarray(0.1 * rng.normal(size=(300, 64)), dtype),
    )
    for prior in (kb.Normal(0.0, 1.0), kb.Normal(0.0, backend.asarray(np.full(64, 1.7), dtype))):
        monkeypatch.setattr(registry._namespace, "eager_slice_size", lambda xp, device: 640)
        sliced = backend.to_numpy(kb.kl_divergence(p, prior, axis=-1))
        monkeypatch.setattr(registry._namespace, "eager_slice_size", lambda xp, device: None)
        whole = backend.to_numpy(kb.kl_divergence(p, prior, axis=-1))
        np.testing.assert_array_equal(sliced, whole)
