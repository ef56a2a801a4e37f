"""Bad input gets a clear error, never a silent wrong number."""

from __future__ import annotations

import numpy as np
import pytest

import kullback as kb


def test_two_frameworks_named(backend, xp):
    if backend.name == "numpy":
        import array_api_strict as other

        other_name = "array_api_strict.Array"
    else:
        other = np
        other_name = "numpy.ndarray"
    p = kb.Normal(backend.asarray([0.0], xp.float64), 1.0)
    q = kb.Normal(other.asarray([0.0]), 1.0)
    with pytest.raises(TypeError, match="different frameworks") as info:
        kb.kl_divergence(p, q)
    assert other_name in str(info.value)
    assert "loc of p" in str(info.value)
    assert "loc of q" in str(info.value)


def test_two_frameworks_in_one_distribution(backend, xp):
    other = np if backend.name != "numpy" else __import__("array_api_strict")
    with pytest.raises(TypeError, match="different frameworks"):
        kb.Normal(backend.asarray([0.0], xp.float64), other.asarray([1.0]))


def test_shapes_that_do_not_broadcast(backend, xp):
    p = kb.Normal(backend.asarray(np.zeros(3), xp.float64), 1.0)
    q = kb.Normal(backend.asarray(np.zeros(4), xp.float64), 1.0)
    with pytest.raises(
        ValueError, match=r"do not broadcast.*\(3,\) \(loc of p\).*\(4,\) \(loc of q\)"
    ):
        kb.kl_divergence(p, q)
    with pytest.raises(ValueError, match="do not broadcast"):
        kb.Normal(backend.asarray(np.zeros(3), xp.float64), backend.asarray(np.ones(2), xp.float64))


def test_integer_arrays_rejected(xp):
    with pytest.raises(TypeError, match=r"scale has dtype .*int.*; expected a real floating dtype"):
        kb.Normal(0.0, xp.asarray([1, 2]))


@pytest.mark.parametrize("bad", [[0.0], "1.0", True, 1j])
def test_unsupported_parameter_types(bad):
    with pytest.raises(TypeError, match="expected an array"):
        kb.Normal(bad, 1.0)


def test_both_or_neither_scale():
    with pytest.raises(TypeError, match="exactly one of scale= and log_scale=; got both"):
        kb.Normal(0.0, 1.0, log_scale=0.0)
    with pytest.raises(TypeError, match="got neither"):
        kb.Normal(0.0)


def test_unregistered_pair_named():
    class Laplace(kb.Distribution):
        _parameter_names = ("loc", "scale")

        def __init__(self, loc, scale):
            super().__init__(loc=loc, scale=scale)

    with pytest.raises(
        NotImplementedError, match=r"Normal \|\| Laplace.*register_kl\(Normal, Laplace\)"
    ):
        kb.kl_divergence(kb.Normal(0.0, 1.0), Laplace(0.0, 1.0))


def test_validate_raises_on_invalid_values(backend, dtype):
    """In every dtype: half-precision parameters are checked as they are computed (in
    float32)."""
    bad_scale = backend.asarray(np.array([1.0, -1.0]), dtype)
    kb.Normal(0.0, bad_scale)  # no check by default: no device sync
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        kb.Normal(0.0, bad_scale, validate=True)
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        kb.Normal(0.0, backend.asarray(np.array([1.0, np.inf]), dtype), validate=True)
    with pytest.raises(ValueError, match="loc contains NaN"):
        kb.Normal(backend.asarray(np.array([np.nan]), dtype), 1.0, validate=True)
    with pytest.raises(ValueError, match="log_scale contains NaN"):
        kb.Normal(0.0, log_scale=backend.asarray(np.array([np.nan]), dtype), validate=True)
    kb.Normal(backend.asarray(np.zeros(2), dtype), log_scale=0.0, validate=True)


def test_distributions_are_immutable():
    p = kb.Normal(0.0, 1.0)
    with pytest.raises(AttributeError, match="immutable"):
        p.loc = 1.0
