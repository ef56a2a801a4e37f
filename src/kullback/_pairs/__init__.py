"""One module per family of pairs; importing a module registers its KLs."""

from . import bernoulli, categorical, normal

__all__ = ["bernoulli", "categorical", "normal"]
