"""Backend selection and fixtures for the conformance suite.

The backend is named by ``KULLBACK_BACKEND`` (set by each nox session): numpy,
array_api_strict, torch, jax, dask or cupy.  If it does not import, collection fails: a
broken install must never pass as a green run of skipped tests.

Tests receive ``xp`` (the backend's array API namespace), ``dtype`` (float32 and float64)
and use :class:`Backend` to move NumPy data in and out of the backend.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any

import array_api_compat
import hypothesis
import numpy as np
import pytest

BACKEND = os.environ.get("KULLBACK_BACKEND", "numpy")
_MODULES = {
    "numpy": "numpy",
    "array_api_strict": "array_api_strict",
    "torch": "torch",
    "jax": "jax.numpy",
    "dask": "dask.array",
    "cupy": "cupy",
}
if BACKEND not in _MODULES:
    raise RuntimeError(f"KULLBACK_BACKEND={BACKEND!r}; expected one of {sorted(_MODULES)}")
_module = importlib.import_module(_MODULES[BACKEND])  # fails loudly if missing

if BACKEND == "jax":
    import jax

    jax.config.update("jax_enable_x64", True)
if BACKEND == "cupy" and _module.cuda.runtime.getDeviceCount() == 0:  # pragma: no cover
    raise RuntimeError("the cupy session needs a CUDA device")

hypothesis.settings.register_profile(
    "kullback", deadline=None, max_examples=60, print_blob=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
    # the explain phase imports libcst, whose deprecation warnings are errors here
    phases=[p for p in hypothesis.Phase if p is not hypothesis.Phase.explain],
)  # fmt: skip
hypothesis.settings.load_profile("kullback")


def pytest_configure(config: pytest.Config) -> None:
    if BACKEND == "dask":
        # Dask computes later, outside kullback's NumPy errstate: inf and NaN results warn.
        config.addinivalue_line("filterwarnings", "ignore::RuntimeWarning")


@dataclass(frozen=True)
class Backend:
    """The backend under test: conversion to and from NumPy, and its capabilities."""

    name: str
    xp: Any

    @property
    def flushes_subnormals(self) -> bool:
        return self.name in ("jax", "cupy")

    def device(self) -> Any:
        """A non-default device where the backend has one (array-api-strict's 'device1')."""
        if self.name == "array_api_strict":
            import array_api_strict

            return array_api_strict.Device("device1")
        if self.name == "torch":
            import torch

            return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        return None

    def asarray(self, values: Any, dtype: Any, device: Any = None) -> Any:
        """NumPy data (exact) as a backend array of ``dtype``."""
        data = np.asarray(values, dtype=np.dtype(dtype_name(dtype)))
        if self.name == "dask":
            import dask.array as da

            if not data.ndim:
                return da.from_array(data, chunks=())
            # three chunks along the leading axis, the others whole (an int would chunk
            # every axis: a (6, 50000) Categorical became 75000 chunks)
            rows = max(1, (data.shape[0] + 2) // 3)
            return da.from_array(data, chunks=(rows, *data.shape[1:]))
        if device is None:
            return self.xp.asarray(data)
        return self.xp.asarray(data, device=device)

    def to_numpy(self, x: Any) -> np.ndarray:
        if self.name == "torch":
            return x.detach().cpu().numpy()
        if self.name == "dask":
            return np.asarray(x.compute())
        if self.name == "cupy":
            return x.get()
        if self.name == "array_api_strict":
            import array_api_strict

            return np.from_dlpack(
                array_api_strict.asarray(x, device=array_api_strict.Device("CPU_DEVICE"))
            )
        return np.asarray(x)


def dtype_name(dtype: Any) -> str:
    """'float32' for the float32 dtype of any backend (and for the string itself)."""
    if isinstance(dtype, str):
        return dtype
    text = str(dtype)
    for name in ("float16", "bfloat16", "float32", "float64"):
        if text.endswith(name) or text.endswith(f"{name}'>"):
            return name
    return np.dtype(dtype).name


_backend = Backend(
    BACKEND,
    array_api_compat.array_namespace(
        _module.asarray([1.0]) if BACKEND != "dask" else _module.ones(1)
    ),
)


@pytest.fixture(scope="session")
def backend() -> Backend:
    return _backend


@pytest.fixture(scope="session")
def xp() -> Any:
    return _backend.xp


@pytest.fixture(scope="session", params=["float32", "float64"])
def dtype(request: pytest.FixtureRequest) -> Any:
    return getattr(_backend.xp, request.param)


def assert_array(
    result: Any, *, xp: Any, dtype: Any, shape: tuple[int, ...], device: Any = None
) -> None:
    """Check namespace, dtype, shape and device of a result together."""
    assert array_api_compat.array_namespace(result) is xp, type(result)
    assert result.dtype == dtype, (result.dtype, dtype)
    assert tuple(result.shape) == tuple(shape), (result.shape, shape)
    if device is not None:
        assert array_api_compat.device(result) == device
