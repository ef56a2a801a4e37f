"""Namespace, dtype and device resolution: the one place that knows about backends.

Every public entry point calls :func:`resolve` once with the labelled parameters it was
given, and passes the returned namespace down; nothing else calls ``array_namespace``.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import array_api_compat

__all__ = [
    "Resolved",
    "clip",
    "compiled",
    "compiles_with_xla",
    "converts_bool_slowly",
    "device_of",
    "eager_slices",
    "errstate",
    "finalize",
    "flushes_subnormals",
    "is_lazy",
    "is_python_scalar",
    "namespace_of",
    "opaque",
    "resolve",
    "result_type",
    "take",
    "type_name",
]


@dataclass(frozen=True)
class Resolved:
    """The common array namespace, floating dtype and device of a set of parameters."""

    xp: Any
    dtype: Any
    device: Any
    shape: tuple[int | None, ...]

    @property
    def working_dtype(self) -> Any:
        """The dtype computations are done in: the result dtype, except that half precision
        (float16, bfloat16) is computed in float32 (its results are then rounded once, to
        within an ulp of the half dtype; float32 is its natural accumulator)."""
        if self.xp.finfo(self.dtype).bits < 32:
            return self.xp.float32
        return self.dtype

    def asarray(self, value: Any) -> Any:
        """Return ``value`` as an array of the common namespace and device, in the working
        dtype (:attr:`working_dtype`).

        Arrays already of that dtype are returned as they are (converting them again could
        detach them from an autograd graph).
        """
        dtype = self.working_dtype
        if is_python_scalar(value):
            return self.xp.asarray(value, dtype=dtype, device=self.device)
        if value.dtype != dtype:
            return self.xp.astype(value, dtype)
        return value

    def result(self, value: Any) -> Any:
        """A result computed in the working dtype, in the result dtype."""
        if value.dtype != self.dtype:
            return self.xp.astype(value, self.dtype)
        return value


def is_python_scalar(value: Any) -> bool:
    """True for Python ``int`` and ``float`` (and their subclasses such as ``np.float64``)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def type_name(value: Any) -> str:
    """A short, recognisable name for the type of ``value``: ``torch.Tensor``, ``jax.Array``."""
    if array_api_compat.is_jax_array(value):
        return "jax.Array"
    if array_api_compat.is_dask_array(value):
        return "dask.array.Array"
    cls = type(value)
    module = cls.__module__.split(".")[0]
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _instance_of(x: Any, module: str, name: str) -> bool:
    """isinstance(x, module.name) if that module is imported (importing nothing)."""
    imported = sys.modules.get(module)
    return imported is not None and isinstance(x, getattr(imported, name))


def namespace_of(x: Any) -> Any:
    """The array API namespace of one array.

    The same answer as ``array_api_compat.array_namespace(x)``, found with plain
    ``isinstance`` checks: array-api-compat's type checks go through an ``lru_cache``, which
    ``torch.compile`` warns about on every call it traces.
    """
    if _instance_of(x, "torch", "Tensor"):
        import array_api_compat.torch as torch_namespace

        return torch_namespace
    if _instance_of(x, "numpy", "ndarray") or _instance_of(x, "numpy", "generic"):
        import array_api_compat.numpy as numpy_namespace

        return numpy_namespace
    if _instance_of(x, "cupy", "ndarray"):
        import array_api_compat.cupy as cupy_namespace

        return cupy_namespace
    if _instance_of(x, "dask.array", "Array"):
        import array_api_compat.dask.array as dask_namespace

        return dask_namespace
    return array_api_compat.array_namespace(x)


def device_of(x: Any) -> Any:
    """The device of an array (``None`` for a traced value that has no concrete one)."""
    if _instance_of(x, "torch", "Tensor"):
        return x.device
    try:
        return array_api_compat.device(x)
    except Exception:  # a traced value may have no concrete device
        return None


def broadcast_shapes(labelled_shapes: Sequence[tuple[str, tuple[Any, ...]]]) -> tuple[Any, ...]:
    """Broadcast shapes per the array API rules, naming every shape when they do not fit.

    Unknown dimensions (``None`` or NaN, as Dask and lazy backends report) broadcast with
    anything.
    """
    ndim = max([len(shape) for _, shape in labelled_shapes] + [0])
    result: list[Any] = []
    for axis in range(-ndim, 0):
        size: Any = 1
        for _, shape in labelled_shapes:
            if len(shape) < -axis:
                continue
            dim = shape[axis]
            if dim is None or (isinstance(dim, float) and math.isnan(dim)):
                size = None if size == 1 else size
                continue
            if dim == 1:
                continue
            if size in (1, None):
                size = dim
            elif size != dim:
                listed = ", ".join(f"{tuple(shape)} ({label})" for label, shape in labelled_shapes)
                raise ValueError(f"shapes do not broadcast together: {listed}")
        result.append(size)
    return tuple(result)


def resolve(labelled: Sequence[tuple[str, Any]]) -> Resolved:
    """Find the one namespace, floating dtype and device shared by labelled parameters.

    Parameters
    ----------
    labelled
        ``(label, value)`` pairs; ``value`` is an array or a Python scalar.  Labels appear in
        error messages, e.g. ``"loc of p"``.

    Returns
    -------
    Resolved
        Namespace (from ``array_api_compat``), result dtype (array API promotion of the
        arrays' dtypes; Python scalars are weak), device and broadcast shape.  With Python
        scalars only, NumPy and float64.

    Raises
    ------
    TypeError
        For an unsupported type, arrays of two frameworks, or a non-floating array.
    ValueError
        For arrays on two devices, or shapes that do not broadcast.
    """
    arrays: list[tuple[str, Any, Any]] = []
    for label, value in labelled:
        if is_python_scalar(value):
            continue
        try:
            namespace = namespace_of(value)
        except TypeError:
            raise TypeError(
                f"{label} is a {type_name(value)}; expected an array of a supported "
                "framework (NumPy, CuPy, PyTorch, JAX, Dask, array-api-strict) or a Python float"
            ) from None
        if arrays and namespace is not arrays[0][2]:
            first_label, first, _ = arrays[0]
            raise TypeError(
                f"arrays from different frameworks: {type_name(first)} ({first_label}) "
                f"and {type_name(value)} ({label})"
            )
        arrays.append((label, value, namespace))

    if not arrays:
        try:
            import numpy as np
        except ImportError:  # pragma: no cover - NumPy is present wherever tests run
            raise ImportError(
                "all parameters are Python scalars; computing on them needs NumPy"
            ) from None
        xp = namespace_of(np.empty(0))
        return Resolved(xp, xp.float64, "cpu", ())

    xp = arrays[0][2]
    for label, value, _ in arrays:
        if not xp.isdtype(value.dtype, "real floating"):
            raise TypeError(f"{label} has dtype {value.dtype}; expected a real floating dtype")
    dtype = result_type([value.dtype for _, value, _ in arrays], xp)

    device = device_of(arrays[0][1])
    for label, value, _ in arrays[1:]:
        other = device_of(value)
        if device is not None and other is not None and other != device:
            raise ValueError(
                f"arrays on different devices: {device} ({arrays[0][0]}) and {other} ({label})"
            )
    shape = broadcast_shapes([(label, tuple(value.shape)) for label, value, _ in arrays])
    return Resolved(xp, dtype, device, shape)


def result_type(dtypes: Sequence[Any], xp: Any) -> Any:
    """The array API promotion of real floating ``dtypes``.

    On PyTorch with ``torch.promote_types``: array-api-compat's ``result_type`` looks dtypes
    outside the standard (float16, bfloat16) up in no table and falls back to
    ``torch.result_type`` of empty tensors, which ``torch.compile`` cannot trace (fullgraph
    fails on any half-precision distribution of two arrays).  For real floating dtypes the two
    promote alike.
    """
    if xp.__name__ == "array_api_compat.torch":
        import torch

        dtype = dtypes[0]
        for other in dtypes[1:]:
            dtype = torch.promote_types(dtype, other)
        return dtype
    return xp.result_type(*dtypes)


_NUMPY_NAMESPACES = frozenset({"numpy", "array_api_compat.numpy"})


def eager_slice_size(xp: Any, device: Any) -> int | None:
    """Elements per slice for backends where each operation is a separate pass over memory
    (NumPy; torch on the CPU, outside torch.compile), or None for fused backends (jax.jit,
    torch.compile), lazy ones (Dask) and GPUs, which gain nothing from slicing.

    Sizes measured on 10**6 float32 Normals (2 cores): NumPy is fastest at 2**16 to 2**17,
    torch at 2**17 (its per-call dispatch costs more, and it splits larger slices across
    threads).
    """
    if xp.__name__ in _NUMPY_NAMESPACES:
        return 2**16
    if xp.__name__ == "array_api_compat.torch":
        import torch

        if not torch.compiler.is_compiling() and getattr(device, "type", None) == "cpu":
            return 2**17
    return None


def eager_slices(
    xp: Any, device: Any, shape: tuple[Any, ...], event_size: int = 1
) -> list[tuple[int, int]] | None:
    """Bounds ``(start, stop)`` along axis 0 of the batch ``shape`` for evaluating it in
    slices of about :func:`eager_slice_size` elements, or None (evaluate it whole).

    Each batch element holds ``event_size`` numbers (the categories of a Categorical).
    """
    slice_size = eager_slice_size(xp, device)
    if slice_size is None or not shape or any(not isinstance(n, int) for n in shape):
        return None
    size = math.prod(shape) * event_size
    if size < 2 * slice_size or shape[0] < 2:
        return None
    rows = max(1, slice_size // max(1, size // shape[0]))
    return [(start, min(start + rows, shape[0])) for start in range(0, shape[0], rows)]


def clip(x: Any, low: Any, high: Any, xp: Any) -> Any:
    """``xp.clip(x, low, high)``, also for Dask arrays of unknown shape.

    array-api-compat's Dask ``clip`` broadcasts the shapes with NumPy, which rejects the NaN
    dimensions of a Dask array whose chunk sizes are unknown (after boolean masking, for
    example); ``dask.array.clip`` works chunk by chunk, lazily.
    """
    if xp.__name__ == "array_api_compat.dask.array":
        import dask.array

        return dask.array.clip(x, low, high)
    return xp.clip(x, low, high)


def take(table: Sequence[float], indices: Any, dtype: Any, xp: Any) -> Any:
    """``table[indices]`` elementwise: entries of a table of Python floats, looked up by an
    integer array of any shape, as an array of ``dtype`` on the device of ``indices``.

    ``take`` wants one-dimensional indices (the standard has no integer array indexing), so
    others are flattened and the entries given their shape again (views on the eager
    backends, nothing compiled).  Dask is the exception: reshaping an array chunked along a
    later axis to one dimension and back multiplies its chunks, while its ``take`` of a
    NumPy table gathers chunk by chunk for indices of any shape (known or unknown chunk
    sizes), so there the table is a NumPy array (Dask's dtypes are NumPy's).
    """
    if is_lazy(xp):
        import numpy as np

        return xp.take(np.asarray(table, dtype=dtype), indices)
    array = xp.asarray(table, dtype=dtype, device=device_of(indices))
    if indices.ndim == 1:
        return xp.take(array, indices)
    return xp.reshape(xp.take(array, xp.reshape(indices, (-1,))), indices.shape)


def compiles_with_xla(xp: Any) -> bool:
    """JAX, whose arrays are computed by XLA, eagerly or under ``jax.jit``."""
    return xp.__name__.startswith("jax")


def converts_bool_slowly(xp: Any) -> bool:
    """PyTorch, whose ``bool`` to floating-point conversion is several times slower than
    going through ``uint8`` (see :func:`kullback.special.mask`)."""
    return xp.__name__ == "array_api_compat.torch"


def opaque(x: Any, xp: Any) -> Any:
    """``x``, hidden from compile-time simplification where a compiler would fold it.

    Under ``jax.jit`` a Python-scalar parameter is a constant, and XLA folds whatever depends
    on it alone; its algebraic simplifier also rewrites sums that error-free transformations
    rely on (``(x + c) - c`` to ``x``).  ``jax.lax.optimization_barrier`` keeps such values
    computed as written.  Elsewhere this is the identity.
    """
    if compiles_with_xla(xp):
        import jax

        return jax.lax.optimization_barrier(x)
    return x


_COMPILED: dict[tuple[Any, str], Any] = {}


def compiled(kernel: Any, xp: Any) -> Any:
    """``kernel(*args, xp=xp)`` as one ``jax.jit`` kernel on JAX; the plain call elsewhere.

    Eager JAX dispatches, and compiles for each new shape, every operation on its own: a
    kernel of a hundred operations then costs about a hundred compilations per shape and a
    dispatch per operation (measured: 12-17 s per test of the Categorical KL, eagerly).  As
    one kernel it is compiled once per shape and dtype and runs fused, as it does inside a
    user's ``jax.jit`` (where this is inlined).  Arguments must be arrays or pytrees of
    them (distributions are).
    """
    if not compiles_with_xla(xp):
        return lambda *args: kernel(*args, xp=xp)
    key = (kernel, xp.__name__)
    if key not in _COMPILED:
        import functools

        import jax

        _COMPILED[key] = jax.jit(functools.partial(kernel, xp=xp))
    return _COMPILED[key]


def is_lazy(xp: Any) -> bool:
    """Dask, whose arrays are task graphs over chunks."""
    return xp.__name__ == "array_api_compat.dask.array"


def flushes_subnormals(xp: Any) -> bool:
    """Backends whose elementwise kernels flush subnormal results to zero: XLA and CuPy."""
    return compiles_with_xla(xp) or xp.__name__ == "array_api_compat.cupy"


def _computes_with_numpy_now(xp: Any) -> bool:
    """NumPy itself, or array-api-strict (NumPy underneath); by name, which torch.compile
    traces without complaint (array-api-compat's is_*_namespace are lru_cached)."""
    return xp.__name__ in _NUMPY_NAMESPACES or xp.__name__ == "array_api_strict"


def finalize(result: Any, xp: Any) -> Any:
    """NumPy returns 0-D results as scalars: make them arrays, as every other backend does."""
    if xp.__name__ in _NUMPY_NAMESPACES:
        return xp.asarray(result)
    return result


@contextlib.contextmanager
def errstate(xp: Any) -> Iterator[None]:
    """Silence NumPy's floating-point warnings: inf and NaN are documented results here.

    NumPy and array-api-strict (which computes with NumPy) warn eagerly; Dask computes later,
    outside this context.
    """
    if _computes_with_numpy_now(xp):
        import numpy as np

        with np.errstate(all="ignore"):
            yield
    else:
        yield
