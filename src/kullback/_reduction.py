"""Masks and reductions shared by every KL: ``where=``, ``axis=`` and ``reduction=``.

A mask is applied without boolean indexing (which is not jittable and has data-dependent
shapes): the parameters of masked entries are replaced by finite values inside the domain
before anything is computed (so neither the value nor any gradient sees what they held:
NaN, inf, padding garbage), and the masked results are then replaced by 0.
"""

from __future__ import annotations

from typing import Any

from . import _namespace

__all__: list[str] = []

REDUCTIONS = ("sum", "mean")


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be 'sum' or 'mean'; got {reduction!r}")


def as_mask(where: Any, resolved: _namespace.Resolved, label: str = "where") -> Any:
    """``where`` as a boolean array of the parameters' namespace and device (or None)."""
    if where is None:
        return None
    xp = resolved.xp
    if isinstance(where, bool):
        return xp.asarray(where, device=resolved.device)
    try:
        namespace = _namespace.namespace_of(where)
    except TypeError:
        raise TypeError(
            f"{label} is a {_namespace.type_name(where)}; expected a boolean array"
        ) from None
    if namespace is not xp:
        raise TypeError(
            f"arrays from different frameworks: {label} is a {_namespace.type_name(where)}, "
            f"the parameters are of {xp.__name__.removeprefix('array_api_compat.')}"
        )
    if where.dtype != xp.bool:
        raise TypeError(f"{label} has dtype {where.dtype}; expected a boolean mask")
    return where


def mask_parameter(value: Any, mask: Any, safe: float, event_ndim: int, xp: Any) -> Any:
    """``value`` where ``mask`` holds, ``safe`` elsewhere (``mask`` covers the batch axes;
    the ``event_ndim`` trailing axes of ``value`` are the event's)."""
    for _ in range(event_ndim):
        mask = xp.expand_dims(mask, axis=-1)
    replacement = xp.asarray(safe, dtype=value.dtype, device=_namespace.device_of(value))
    return xp.where(mask, value, replacement)


def reduce(
    values: Any, *, axis: int | tuple[int, ...] | None, mask: Any, reduction: str, xp: Any
) -> Any:
    """Zero the masked entries of ``values``, then reduce over ``axis``.

    ``"mean"`` divides by the number of unmasked entries of the reduced axes; where there
    is none the sum is 0 and so is the mean, with a zero gradient (no ``0/0``).
    """
    if mask is not None:
        values = xp.where(mask, values, xp.zeros_like(values))
    if axis is None:
        return values
    total = xp.sum(values, axis=axis)
    if reduction == "sum":
        return total
    if mask is None:
        return xp.mean(values, axis=axis)
    count = xp.sum(xp.astype(xp.broadcast_to(mask, values.shape), values.dtype), axis=axis)
    return total / xp.maximum(count, xp.ones_like(count))
