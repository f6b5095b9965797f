"""Where a study's runs go: one module per ``executor.kind``, as submitit has one per backend.

``EXECUTORS`` maps each kind to its class: every ``ExecutorKind`` subclass that a module of this package
defines with a ``kind`` (``base.py`` says what a kind declares), the default kind (a study's that names none:
local) first, then by name (the order of the schema's error message and of docs/studies.md). A new kind is one
module here.
"""

from __future__ import annotations

import importlib
import pkgutil

from ablate.executors.base import ExecutorKind, Liveness, Settings
from ablate.executors.local import Local

DEFAULT_KIND = Local.kind


def _kinds() -> list[type[ExecutorKind]]:
    """The kinds the modules of this package define (a kind a module imports is its own module's)."""
    found = []
    for module_info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        found += [value for value in vars(module).values() if isinstance(value, type)
                  and issubclass(value, ExecutorKind) and value.__module__ == module.__name__ and "kind" in vars(value)]
    names = [kind.kind for kind in found]
    if len(set(names)) < len(names):
        raise TypeError(f"executor kinds {names}: each needs a name of its own")
    return sorted(found, key=lambda kind: (kind.kind != DEFAULT_KIND, kind.kind))


EXECUTORS: dict[str, type[ExecutorKind]] = {kind.kind: kind for kind in _kinds()}

__all__ = ["DEFAULT_KIND", "EXECUTORS", "ExecutorKind", "Liveness", "Settings"]
