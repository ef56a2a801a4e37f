"""``kl_divergence`` and ``register_kl``: dispatch on ``(type(p), type(q))``, then reduce."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from . import _namespace, _reduction
from .distributions import Distribution

__all__ = ["kl_divergence", "register_kl"]

KLFunction = Callable[..., Any]
F = TypeVar("F", bound=KLFunction)

_REGISTRY: dict[tuple[type, type], KLFunction] = {}
# Lookups by pair of types; a plain dict rather than functools.cache, which torch.compile
# warns about and cannot trace.
_LOOKUP_CACHE: dict[tuple[type, type], KLFunction | None] = {}


def register_kl(type_p: type, type_q: type) -> Callable[[F], F]:
    """Register the function computing ``KL(p || q)`` for ``p: type_p`` and ``q: type_q``.

    Parameters
    ----------
    type_p, type_q : type
        Subclasses of :class:`kullback.Distribution`.

    Returns
    -------
    callable
        A decorator that registers its function and returns it unchanged.

    Notes
    -----
    The function is called as ``fn(p, q, xp=xp)`` and returns the elementwise KL over the
    broadcast batch shape.  Before the call, every parameter of ``p`` and ``q`` has been
    converted to the namespace ``xp`` (an ``array_api_compat`` namespace), to one floating
    dtype and to one device, so the function uses ``xp`` and nothing else.  That dtype is
    the one computations are done in: the parameters' promoted dtype, except that half
    precision (float16, bfloat16) arrives as float32, as it does for the library's own
    pairs; :func:`kl_divergence` rounds the result to the half dtype once, after the
    reduction.  Reductions over ``axis`` are done by :func:`kl_divergence`.  Lookup takes
    the most specific registered pair along both method resolution orders.

    Examples
    --------
    >>> import kullback as kb
    >>> class Dirac(kb.Distribution):
    ...     _parameter_names = ("loc",)
    ...     def __init__(self, loc):
    ...         super().__init__(loc=loc)
    >>> @kb.register_kl(Dirac, Dirac)
    ... def _kl_dirac_dirac(p, q, *, xp):
    ...     return xp.where(p.loc == q.loc, 0.0, float("inf"))
    >>> float(kb.kl_divergence(Dirac(1.0), Dirac(1.0)))
    0.0
    """
    for t in (type_p, type_q):
        if not (isinstance(t, type) and issubclass(t, Distribution)):
            raise TypeError(f"register_kl takes subclasses of kullback.Distribution, got {t!r}")

    def decorator(fn: F) -> F:
        _REGISTRY[type_p, type_q] = fn
        _LOOKUP_CACHE.clear()
        return fn

    return decorator


def _lookup(type_p: type, type_q: type) -> KLFunction | None:
    key = (type_p, type_q)
    if key not in _LOOKUP_CACHE:
        _LOOKUP_CACHE[key] = _most_specific(type_p, type_q)
    return _LOOKUP_CACHE[key]


def _most_specific(type_p: type, type_q: type) -> KLFunction | None:
    """The pair nearest along both MROs (by total distance, then p's).  Written as a plain
    loop: torch.compile traces this on a first call inside a compiled function, and cannot
    trace ``min`` with a ``key`` function (measured: ``fullgraph=True`` failed)."""
    best: KLFunction | None = None
    best_rank = (0, 0)
    for (tp, tq), fn in _REGISTRY.items():
        if issubclass(type_p, tp) and issubclass(type_q, tq):
            distance_p, distance_q = type_p.__mro__.index(tp), type_q.__mro__.index(tq)
            rank = (distance_p + distance_q, distance_p)
            if best is None or rank < best_rank:
                best, best_rank = fn, rank
    return best


# Eager CPU backends allocate a temporary per operation; with many operations on large
# arrays these no longer fit in cache (and are paged in and out again).  Such inputs are
# evaluated in slices along the leading axis, of about the size that
# _namespace.eager_slice_size gives: measured on 10**6 float32 Normals, 38 ms whole against
# 8 to 10 ms in slices (NumPy and torch alike).


# Parameters that broadcast along the leading axis are passed whole to every slice (the same
# array object).  Work that depends on them alone is done once per evaluation, not once per
# slice, through shared_across_slices: on 0-D arrays that work is all per-call overhead.
# One cache per thread that is evaluating in slices; a plain dict, which torch.compile can
# trace (it cannot trace a ContextVar), and empty outside sliced evaluations.
_SHARED: dict[int, dict[tuple[int, str], tuple[Any, Any]]] = {}


def shared_across_slices(array: Any, name: str, compute: Callable[[], Any]) -> Any:
    """``compute()``, computed once per sliced evaluation for a given ``array`` and ``name``.

    ``compute`` must depend on ``array`` alone (and on the namespace).  Outside a sliced
    evaluation (compiled, lazy, GPU or small inputs) it is simply called.  The cache holds
    ``array`` itself, so its ``id`` cannot be reused by another array meanwhile.
    """
    if not _SHARED:
        return compute()
    shared = _SHARED.get(threading.get_ident())
    if shared is None:
        return compute()
    key = (id(array), name)
    if key not in shared:
        shared[key] = (array, compute())
    return shared[key][1]


def _converted(distribution: Distribution, parameters: dict[str, Any]) -> Distribution:
    """``distribution`` with new parameter arrays, remembering which were Python numbers."""
    new = type(distribution)._from_parameters(parameters)
    numbers = getattr(distribution, "_python_numbers", None)
    if numbers is None:
        numbers = {
            name: float(value)
            for name, value in distribution.parameters.items()
            if _namespace.is_python_scalar(value)
        }
    object.__setattr__(new, "_python_numbers", numbers)
    return new


def python_number(distribution: Distribution, name: str) -> float | None:
    """The Python number that parameter ``name`` was given as, or None for an array.

    KL functions receive every parameter as an array; a parameter given as a Python number
    is a constant, about which some exact work can be done once, in Python (for example
    the logarithm of a prior's scale), rather than in array operations.
    """
    return getattr(distribution, "_python_numbers", {}).get(name)


def _sliced(value: Any, ndim: int, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of the broadcast leading axis of ``value`` (whole if broadcast)."""
    if value.ndim < ndim or value.shape[0] == 1:
        return value
    return value[start:stop, ...]


def _evaluate(
    fn: KLFunction,
    p: Distribution,
    q: Distribution,
    resolved: _namespace.Resolved,
    batch_shape: tuple[Any, ...],
) -> Any:
    xp = resolved.xp
    bounds = _namespace.eager_slices(
        xp, resolved.device, batch_shape, math.prod(resolved.shape[len(batch_shape) :])
    )
    if bounds is None:
        return fn(p, q, xp=xp)
    ndim = len(resolved.shape)
    pieces = []
    thread = threading.get_ident()
    _SHARED[thread] = {}
    try:
        for start, stop in bounds:
            p_rows = _converted(
                p, {k: _sliced(v, ndim, start, stop) for k, v in p.parameters.items()}
            )
            q_rows = _converted(
                q, {k: _sliced(v, ndim, start, stop) for k, v in q.parameters.items()}
            )
            pieces.append(fn(p_rows, q_rows, xp=xp))
    finally:
        del _SHARED[thread]
    return xp.concat(pieces, axis=0)


def _event_shapes(p: Distribution, q: Distribution) -> None:
    """Check that ``p`` and ``q`` have events of one kind and size (the number of categories
    of two Categoricals), naming both when they differ."""
    if p._event_ndim != q._event_ndim:
        raise TypeError(f"{type(p).__name__} and {type(q).__name__} have events of different ranks")
    if not p._event_ndim:
        return
    sizes = []
    for d in (p, q):
        value = next(iter(d.parameters.values()))
        sizes.append(tuple(value.shape[-d._event_ndim :]))
    if sizes[0] != sizes[1]:
        raise ValueError(
            f"the events of p and q differ: {sizes[0]} for p ({type(p).__name__}) and "
            f"{sizes[1]} for q ({type(q).__name__}); a KL needs the same categories"
        )


def kl_divergence(
    p: Distribution,
    q: Distribution,
    *,
    axis: int | tuple[int, ...] | None = None,
    where: Any = None,
    reduction: str = "sum",
) -> Any:
    r"""Kullback–Leibler divergence ``KL(p || q) = E_p[log p(X) - log q(X)]``.

    Parameters
    ----------
    p, q : Distribution
        Distributions of a registered pair, e.g. two :class:`kullback.Normal` or two
        :class:`kullback.Categorical`.  Their parameters may come from any supported
        framework (all from one), or be Python scalars; they broadcast together.
    axis : int or tuple of int, optional
        Axes of the broadcast batch over which to reduce the KLs, e.g. the event axis of a
        diagonal Gaussian (the KL of independent components is the sum of theirs) or the
        tokens of a sequence.  By default nothing is reduced.  (A Categorical's categories
        are its event, always reduced: its KL has the batch shape.)
    where : boolean array, optional
        Entries of the batch where the mask is False contribute exactly 0 to the value and
        to every gradient, whatever their parameters hold (NaN, inf, padding).  It
        broadcasts with the batch.
    reduction : {"sum", "mean"}
        How ``axis`` is reduced: the sum, or the mean over the unmasked entries (0, with a
        zero gradient, where none is unmasked).

    Returns
    -------
    array
        ``KL(p || q) >= 0``, in the parameters' namespace, floating dtype (array API type
        promotion) and device.  With Python scalars only, a NumPy float64 array.  Half
        precision (float16, bfloat16) is computed in float32 and rounded once.

    Raises
    ------
    NotImplementedError
        If no KL is registered for the pair of types.
    TypeError
        For parameters from two frameworks, or a mask that is not a boolean array of theirs.
    ValueError
        For parameters whose shapes do not broadcast, on two devices, with different
        numbers of categories, or an unknown ``reduction``.

    Examples
    --------
    >>> import numpy as np
    >>> import kullback as kb
    >>> p = kb.Normal(np.array([0.0, 1.0]), np.array([1.0, 2.0]))
    >>> q = kb.Normal(0.0, 1.0)
    >>> kb.kl_divergence(p, q)
    array([0.        , 1.30685282])
    >>> kb.kl_divergence(p, q, axis=-1)
    array(1.30685282)
    >>> kb.kl_divergence(p, q, axis=-1, where=np.array([True, False]), reduction="mean")
    array(0.)
    """
    _reduction.check_reduction(reduction)
    fn = _lookup(type(p), type(q))
    if fn is None:
        raise NotImplementedError(
            f"no KL divergence is registered for {type(p).__name__} || {type(q).__name__}; "
            f"add one with @kullback.register_kl({type(p).__name__}, {type(q).__name__})"
        )
    _event_shapes(p, q)
    labelled = [(f"{name} of p", value) for name, value in p.parameters.items()]
    labelled += [(f"{name} of q", value) for name, value in q.parameters.items()]
    resolved = _namespace.resolve(labelled)
    xp = resolved.xp
    mask = _reduction.as_mask(where, resolved)
    p = _prepared(p, resolved, mask)
    q = _prepared(q, resolved, mask)
    batch_shape = resolved.shape[: len(resolved.shape) - p._event_ndim]
    with _namespace.errstate(xp):
        kl = _evaluate(fn, p, q, resolved, batch_shape)
        kl = _reduction.reduce(kl, axis=axis, mask=mask, reduction=reduction, xp=xp)
        # rounding a half-precision result overflows to inf where the KL exceeds its range
        return _namespace.finalize(resolved.result(kl), xp)


def _prepared(distribution: Distribution, resolved: _namespace.Resolved, mask: Any) -> Any:
    """``distribution`` with every parameter an array of the working namespace, dtype and
    device; under a mask, array parameters of masked entries hold safe values."""
    parameters = {k: resolved.asarray(v) for k, v in distribution.parameters.items()}
    if mask is not None:
        for name, value in distribution.parameters.items():
            if not _namespace.is_python_scalar(value):
                parameters[name] = _reduction.mask_parameter(
                    parameters[name],
                    mask,
                    distribution._safe_values[name],
                    distribution._event_ndim,
                    resolved.xp,
                )
    return _converted(distribution, parameters)
