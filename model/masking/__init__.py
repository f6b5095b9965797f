"""Masking strategies, by name: ``build_masking("dirichlet", specs, 128, 128, {"input_alphas": 1.0})``.

A family is one ``MaskingStrategy`` subclass in one file of this package, decorated with
``@register("name")``, plus its import at the bottom of this file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from model.dataset import ModalitySpec
from model.masking.base import MaskingStrategy, Masks

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
from model.masking import aligned, block, dirichlet, hard, random  # noqa: E402, F401

__all__ = ["STRATEGIES", "Masks", "MaskingStrategy", "build_masking", "register"]
