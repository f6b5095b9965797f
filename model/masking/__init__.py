"""Masking strategies, by name: ``build_masking("dirichlet", specs, 128, 128, {"input_alphas": 1.0})``.

A family is one file of this package holding one ``MaskingStrategy`` subclass (a ``HidingStrategy`` when it
only says which tokens to hide) decorated with ``@register("<name>")``; importing this package imports every
module in it, which registers them. Everything else follows from the registry: the preset ``masking=<name>``
(``model/config.py``), the parameter tables of ``ablate masking`` and ``docs/masking.md`` (``describe.py``),
the families a study may name and the contract tests (``tests/test_masking_contract.py``).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

from model.dataset import ModalitySpec
from model.masking.base import MaskingStrategy

STRATEGIES: dict[str, type[MaskingStrategy]] = {}


def register(name: str) -> Callable[[type[MaskingStrategy]], type[MaskingStrategy]]:
    def add(cls: type[MaskingStrategy]) -> type[MaskingStrategy]:
        if name in STRATEGIES:
            raise ValueError(f"masking strategy {name!r} registered twice")
        cls.name = name
        STRATEGIES[name] = cls
        return cls

    return add


def build_masking(
    name: str,
    specs: dict[str, ModalitySpec],
    input_budget: int,
    target_budget: int,
    params: dict[str, Any] | None = None,
) -> MaskingStrategy:
    """The strategy registered as ``name``; ``ValueError`` names what is wrong and what is allowed."""
    if name not in STRATEGIES:
        raise ValueError(f"masking={name!r}: unknown masking strategy; allowed: {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name](specs, input_budget, target_budget, **dict(params or {}))


# Importing a family registers it.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["STRATEGIES", "MaskingStrategy", "build_masking", "register"]
