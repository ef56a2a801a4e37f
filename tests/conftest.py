"""Backend selection and fixtures for the conformance suite.

The backend is named by ``KULLBACK_BACKEND`` (set by each nox session): numpy,
array_api_strict, torch, jax, dask or cupy.  If it does not import, collection fails: a
broken install must never pass as a green run of skipped tests.

Tests receive ``xp`` (the backend's array API namespace) and ``dtype``: float32 and
float64, and the half-precision dtypes the backend has (float16 on NumPy, Dask and CuPy;
float16 and bfloat16 on PyTorch and JAX; array-api-strict has none, like the standard).
Half inputs are computed in float32 and rounded once, so every accuracy bound for them is
1 ulp of the half dtype (:func:`ulp_bound`).  :class:`Backend` moves NumPy data (bfloat16
through ``ml_dtypes``) in and out of the backend; :func:`finfo` describes every dtype.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any

import array_api_compat
import hypothesis
import ml_dtypes  # registers bfloat16 with NumPy; finfo for every dtype
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

HALF_DTYPES = {
    "numpy": ["float16"],
    "dask": ["float16"],
    "cupy": ["float16"],
    "torch": ["float16", "bfloat16"],
    "jax": ["float16", "bfloat16"],
}
DTYPES = ["float32", "float64", *HALF_DTYPES.get(BACKEND, [])]

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
        name = dtype_name(dtype)
        data = np.asarray(values, dtype=np.dtype(name))
        if self.name == "torch" and name == "bfloat16":  # torch takes no NumPy bfloat16
            import torch

            wide = torch.asarray(data.astype(np.float32), device=device)  # exact
            return wide.to(torch.bfloat16)
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
            import torch

            if x.dtype == torch.bfloat16:
                return x.detach().cpu().float().numpy().astype(ml_dtypes.bfloat16)  # exact
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
    for name in ("bfloat16", "float16", "float32", "float64"):  # "bfloat16" ends in "float16"
        if text.endswith(name) or text.endswith(f"{name}'>"):
            return name
    return np.dtype(dtype).name


def finfo(dtype: Any) -> Any:
    """``np.finfo`` of the dtype (a backend's, or its name), bfloat16 included."""
    return ml_dtypes.finfo(np.dtype(dtype_name(dtype)))


def working_name(dtype: Any) -> str:
    """The name of the dtype a backend computes ``dtype`` in: float32 for the half dtypes
    (whose subnormal results are therefore ordinary float32 numbers, which XLA and CuPy do
    not flush), the dtype itself otherwise."""
    return "float32" if is_half(dtype) else dtype_name(dtype)


def is_half(dtype: Any) -> bool:
    return dtype_name(dtype) in ("float16", "bfloat16")


def ulp_bound(dtype: Any, bound: float) -> float:
    """The accuracy bound in ulp of ``dtype``: ``bound`` for float32 and float64, and 1 for
    the half dtypes, whose results are the float32 result rounded once (the contract)."""
    return 1.0 if is_half(dtype) else bound


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


@pytest.fixture(scope="session", params=DTYPES)
def dtype(request: pytest.FixtureRequest) -> Any:
    # array-api-compat's Dask namespace has only the standard's dtypes; Dask arrays take
    # NumPy's float16
    dtype = getattr(_backend.xp, request.param, None)
    return np.dtype(request.param).type if dtype is None else dtype


def assert_array(
    result: Any, *, xp: Any, dtype: Any, shape: tuple[int, ...], device: Any = None
) -> None:
    """Check namespace, dtype, shape and device of a result together."""
    assert array_api_compat.array_namespace(result) is xp, type(result)
    assert result.dtype == dtype, (result.dtype, dtype)
    assert tuple(result.shape) == tuple(shape), (result.shape, shape)
    if device is not None:
        assert array_api_compat.device(result) == device
