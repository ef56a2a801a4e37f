"""Small frozen parameter containers.  They hold arrays; they compute nothing.

A distribution is identified by its class and its named parameters.  KL divergences between
them live in :mod:`kullback._pairs` and are found by :func:`kullback.kl_divergence`.
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar

from . import _namespace

__all__ = ["Bernoulli", "Categorical", "Distribution", "Normal"]

_registered_pytrees: set[type] = set()


def _register_pytree(cls: type) -> None:
    """Make ``cls`` a JAX pytree (parameters are the leaves) once JAX has been imported."""
    if cls in _registered_pytrees or "jax" not in sys.modules:
        return
    import jax

    # The Python numbers that parameters were given as (kept by kl_divergence, see
    # kullback._registry.python_number) are static: they travel as auxiliary data.
    def flatten(d: Distribution) -> tuple[tuple[Any, ...], Any]:
        numbers = getattr(d, "_python_numbers", None)
        static = None if numbers is None else tuple(sorted(numbers.items()))
        return tuple(getattr(d, name) for name in cls._parameter_names), static

    def unflatten(static: Any, leaves: tuple[Any, ...]) -> Distribution:
        new = cls._from_parameters(dict(zip(cls._parameter_names, leaves, strict=True)))
        if static is not None:
            object.__setattr__(new, "_python_numbers", dict(static))
        return new

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
    # Trailing axes of every parameter that belong to one draw (the categories of a
    # Categorical), not to the batch; KL functions reduce them.
    _event_ndim: ClassVar[int] = 0
    # Finite values inside the domain, put in place of the parameters of masked entries
    # (``kl_divergence(..., where=mask)``) so that neither values nor gradients see them.
    _safe_values: ClassVar[dict[str, float]] = {}

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
    _safe_values: ClassVar[dict[str, float]] = {"loc": 0.0, "scale": 1.0, "log_scale": 0.0}
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


def _exactly_one(name: str, logits: Any, probs: Any) -> None:
    if (logits is None) == (probs is None):
        given = "both" if logits is not None else "neither"
        raise TypeError(f"{name} takes exactly one of logits= and probs=; got {given}")


def _validate_logits(name: str, logits: Any, resolved: _namespace.Resolved) -> Any:
    xp = resolved.xp
    logits = resolved.asarray(logits)
    if bool(xp.any(xp.isnan(logits))):
        raise ValueError(f"{name}: logits contain NaN")
    if bool(xp.any(logits == xp.inf)):
        raise ValueError(f"{name}: logits contain +inf")
    return logits


def _validate_probs(name: str, probs: Any, resolved: _namespace.Resolved, low: float) -> Any:
    xp = resolved.xp
    probs = resolved.asarray(probs)
    if bool(xp.any(xp.isnan(probs))):
        raise ValueError(f"{name}: probs contain NaN")
    if not bool(xp.all((probs >= low) & (probs <= 1))):
        raise ValueError(f"{name}: probs must lie in [0, 1] (found a value outside)")
    return probs


class Categorical(Distribution):
    """Categorical distribution over the last axis, given by ``logits`` or by ``probs``.

    Parameters
    ----------
    logits : array, optional
        Unnormalized log-probabilities, ``p_i = exp(logits_i) / sum_j exp(logits_j)`` along
        the last axis (the event axis, as in ``torch.distributions`` and TFP); ``-inf``
        is a category of probability 0.  A finite logit is a positive probability, however
        small: support is decided from ``logits == -inf``, never from an underflowed
        ``exp``.
    probs : array, keyword-only, optional
        Non-negative weights along the last axis, normalized by their sum (a sum that is
        not exactly 1 is fine).  Exactly one of ``logits`` and ``probs`` must be given.
    validate : bool, keyword-only
        If True, check the values now and raise ``ValueError``: no NaN, no ``+inf`` logit,
        not every logit of a row ``-inf``; probs in ``[0, 1]``, each row summing to 1
        within ``4 K eps`` of the dtype (``K`` categories).  This synchronizes with the
        device; by default such values give NaN for their row.

    Notes
    -----
    The leading axes are the batch; they broadcast with the other distribution's in a KL,
    whose number of categories must be the same.  The KL reduces the event axis and has
    the batch shape.

    Examples
    --------
    >>> import numpy as np
    >>> import kullback as kb
    >>> kb.Categorical(np.zeros((4, 10)))
    Categorical(logits=<numpy.ndarray (4, 10) float64>)
    """

    _parameter_names = ("logits", "probs")
    _event_ndim = 1
    _safe_values: ClassVar[dict[str, float]] = {"logits": 0.0, "probs": 1.0}
    logits: Any
    probs: Any

    def __init__(self, logits: Any = None, *, probs: Any = None, validate: bool = False) -> None:
        _exactly_one("Categorical", logits, probs)
        given = logits if logits is not None else probs
        if _namespace.is_python_scalar(given) or getattr(given, "ndim", 0) < 1:
            raise ValueError(
                "Categorical needs an array with at least one axis (the categories, last); "
                f"got {given!r}"
            )
        super().__init__(logits=logits, probs=probs)
        if validate:
            self._validate()

    def _validate(self) -> None:
        resolved = _namespace.resolve(list(self.parameters.items()))
        xp = resolved.xp
        if self.logits is not None:
            logits = _validate_logits("Categorical", self.logits, resolved)
            if bool(xp.any(xp.all(logits == -xp.inf, axis=-1))):
                raise ValueError("Categorical: a row of logits is -inf in every category")
            return
        probs = _validate_probs("Categorical", self.probs, resolved, 0.0)
        categories = probs.shape[-1]
        tolerance = 4 * categories * float(xp.finfo(probs.dtype).eps)
        if not bool(xp.all(xp.abs(xp.sum(probs, axis=-1) - 1) <= tolerance)):
            raise ValueError(
                f"Categorical: probs must sum to 1 along the last axis (within {tolerance:.3g})"
            )


class Bernoulli(Distribution):
    """Bernoulli distribution, ``P(X = 1) = sigmoid(logits)`` or ``probs``, elementwise.

    Parameters
    ----------
    logits : array or float, optional
        Log-odds ``log(p / (1 - p))``; ``-inf`` and ``+inf`` are the certain outcomes
        ``p = 0`` and ``p = 1``.
    probs : array or float, keyword-only, optional
        ``P(X = 1)``, in ``[0, 1]``.  Exactly one of ``logits`` and ``probs`` must be given.
    validate : bool, keyword-only
        If True, check the values now (no NaN; probs in ``[0, 1]``) and raise
        ``ValueError``.  By default such values give NaN.

    Examples
    --------
    >>> import numpy as np
    >>> import kullback as kb
    >>> kb.Bernoulli(probs=np.array([0.1, 0.5]))
    Bernoulli(probs=<numpy.ndarray (2,) float64>)
    """

    _parameter_names = ("logits", "probs")
    _safe_values: ClassVar[dict[str, float]] = {"logits": 0.0, "probs": 0.5}
    logits: Any
    probs: Any

    def __init__(self, logits: Any = None, *, probs: Any = None, validate: bool = False) -> None:
        _exactly_one("Bernoulli", logits, probs)
        super().__init__(logits=logits, probs=probs)
        if validate:
            self._validate()

    def _validate(self) -> None:
        resolved = _namespace.resolve(list(self.parameters.items()))
        if self.logits is not None:
            logits = resolved.asarray(self.logits)
            if bool(resolved.xp.any(resolved.xp.isnan(logits))):
                raise ValueError("Bernoulli: logits contain NaN")
            return
        _validate_probs("Bernoulli", self.probs, resolved, 0.0)
