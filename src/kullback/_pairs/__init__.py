"""One module per family of pairs; importing a module registers its KLs."""

from . import normal

__all__ = ["normal"]
