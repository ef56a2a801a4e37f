"""One module per family of pairs; importing a module registers its KLs."""

from . import categorical, normal

__all__ = ["categorical", "normal"]
