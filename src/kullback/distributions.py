"""Small frozen parameter containers.  They hold arrays; they compute nothing.

A distribution is identified by its class and its named parameters.  KL divergences between
them live in :mod:`kullback._pairs` and are found by :func:`kullback.kl_divergence`.
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar

from . import _namespace

__all__ = ["Distribution", "Normal"]

_registered_pytrees: set[type] = set()


def _register_pytree(cls: type) -> None:
    """Make ``cls`` a JAX pytree (parameters are the leaves) once JAX has been imported."""
    if cls in _registered_pytrees or "jax" not in sys.modules:
        return
    import jax

    def flatten(d: Distribution) -> tuple[tuple[Any, ...], None]:
        return tuple(getattr(d, name) for name in cls._parameter_names), None

    def unflatten(_: None, leaves: tuple[Any, ...]) -> Distribution:
        return cls._from_parameters(dict(zip(cls._parameter_names, leaves, strict=True)))

    jax.tree_util.register_pytree_node(cls, flatten, unflatten)
    _registered_pytrees.add(cls)


class Distribution:
    """Base class: an immutable set of named parameters (arrays or Python scalars).

    Subclasses declare ``_parameter_names`` and call ``super().__init__(**parameters)``;
    parameters that are ``None`` are absent (e.g. ``scale`` when ``log_scale`` is given).
    The constructor checks types, frameworks, floating dtypes and broadcastability, which
    costs no pass over the data.  Instances are JAX pytrees when JAX is imported, so they
    cross ``jax.jit`` and ``jax.vmap`` boundaries.
    """

    _parameter_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **parameters: Any) -> None:
        present = [(name, value) for name, value in parameters.items() if value is not None]
        _namespace.resolve(present)
        for name in self._parameter_names:
            object.__setattr__(self, name, parameters.get(name))
        _register_pytree(type(self))

    @classmethod
    def _from_parameters(cls, parameters: dict[str, Any]) -> Distribution:
        """Rebuild without checks (parameters may be tracers or placeholders)."""
        new = object.__new__(cls)
        for name in cls._parameter_names:
            object.__setattr__(new, name, parameters.get(name))
        return new

    @property
    def parameters(self) -> dict[str, Any]:
        """The parameters that are set, by name."""
        return {
            name: getattr(self, name)
            for name in self._parameter_names
            if getattr(self, name) is not None
        }

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __repr__(self) -> str:
        def show(value: Any) -> str:
            if _namespace.is_python_scalar(value):
                return repr(value)
            return f"<{_namespace.type_name(value)} {tuple(value.shape)} {value.dtype}>"

        inner = ", ".join(f"{name}={show(value)}" for name, value in self.parameters.items())
        return f"{type(self).__name__}({inner})"


class Normal(Distribution):
    """Normal distribution ``N(loc, scale**2)``, given by ``scale`` or by ``log_scale``.

    Parameters
    ----------
    loc : array or float
        Mean.
    scale : array or float, optional
        Standard deviation, finite and ``> 0``.
    log_scale : array or float, keyword-only, optional
        Natural logarithm of the standard deviation, what VAE encoders output.  Exactly one
        of ``scale`` and ``log_scale`` must be given.  KLs computed from ``log_scale`` use
        it directly (``log(scale_p/scale_q)`` becomes a difference of log-scales), so no
        precision is lost by exponentiating first.
    validate : bool, keyword-only
        If True, check the values now (``scale`` finite and ``> 0``, no NaN) and raise
        ``ValueError``.  This synchronizes with the device; by default values outside the
        domain (a negative or infinite scale) give NaN instead.

    Notes
    -----
    The arrays broadcast together, and with the other distribution's in a KL.  A diagonal
    multivariate Normal is a ``Normal`` whose KL is summed over the event axis:
    ``kl_divergence(p, q, axis=-1)``.

    Examples
    --------
    >>> import numpy as np
    >>> import kullback as kb
    >>> p = kb.Normal(np.zeros(3), log_scale=np.zeros(3))
    >>> p
    Normal(loc=<numpy.ndarray (3,) float64>, log_scale=<numpy.ndarray (3,) float64>)
    """

    _parameter_names = ("loc", "scale", "log_scale")
    loc: Any
    scale: Any
    log_scale: Any

    def __init__(
        self,
        loc: Any,
        scale: Any = None,
        *,
        log_scale: Any = None,
        validate: bool = False,
    ) -> None:
        if (scale is None) == (log_scale is None):
            given = "both" if scale is not None else "neither"
            raise TypeError(f"Normal takes exactly one of scale= and log_scale=; got {given}")
        super().__init__(loc=loc, scale=scale, log_scale=log_scale)
        if validate:
            self._validate()

    def _validate(self) -> None:
        resolved = _namespace.resolve(list(self.parameters.items()))
        xp = resolved.xp
        loc = resolved.asarray(self.loc)
        if bool(xp.any(xp.isnan(loc))):
            raise ValueError("Normal: loc contains NaN")
        if self.scale is not None:
            scale = resolved.asarray(self.scale)
            if not bool(xp.all((scale > 0) & xp.isfinite(scale))):
                raise ValueError(
                    "Normal: scale must be finite and > 0 (found a value <= 0, inf or NaN)"
                )
        elif bool(xp.any(xp.isnan(resolved.asarray(self.log_scale)))):
            raise ValueError("Normal: log_scale contains NaN")
