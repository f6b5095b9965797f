"""Curricula for masking parameters: any number in a strategy's parameters may be a schedule.

    mask_ratio: {schedule: linear, start: 0.5, end: 0.85, warmup: 200}

holds ``start`` for ``warmup`` steps, then moves to ``end`` by the last step: ``constant``
(stays at ``start``; ``end`` may be left out), ``linear`` or ``cosine`` (half a cosine wave,
as in learning-rate schedules). A schedule may stand wherever a number does, also inside a
mapping or list (``input_alphas: {rgb: {schedule: ...}, depth: 1.0}``). The strategy base
class finds them (``find``) and resolves them to numbers at every ``set_progress`` (``resolve``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

KINDS = ("constant", "linear", "cosine")
KEYS = ("schedule", "start", "end", "warmup")


@dataclass(frozen=True)
class Schedule:
    kind: str
    start: float
    end: float
    warmup: int = 0  # steps held at ``start``

    def at(self, t: float) -> float:
        """The value at training progress t in [0, 1] (after the warmup)."""
        if self.kind == "constant":
            return self.start
        if self.kind == "cosine":
            t = 0.5 * (1.0 - math.cos(math.pi * t))
        return self.start + (self.end - self.start) * t

    def __call__(self, step: int, total_steps: int) -> float:
        t = (step - self.warmup) / max(1, total_steps - self.warmup)
        return self.at(min(max(t, 0.0), 1.0))


def is_schedule(value: Any) -> bool:
    return isinstance(value, Mapping) and "schedule" in value


def parse(where: str, value: Mapping) -> Schedule:
    """A schedule mapping -> ``Schedule``; ``ValueError`` names ``where`` (e.g. ``masking.mask_ratio``)."""
    if unknown := sorted(set(value) - set(KEYS)):
        raise ValueError(f"{where}.{unknown[0]}: unknown schedule key; allowed: {', '.join(KEYS)}")
    kind = value["schedule"]
    if kind not in KINDS:
        raise ValueError(f"{where}.schedule={kind!r}: must be one of {', '.join(KINDS)}")
    if "start" not in value or (kind != "constant" and "end" not in value):
        raise ValueError(f"{where}: a {kind} schedule needs {'start' if kind == 'constant' else 'start and end'}")
    numbers = {k: value.get(k, value["start"]) for k in ("start", "end")}
    for key, number in numbers.items():
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise ValueError(f"{where}.{key}={number!r}: must be a finite number")
    warmup = value.get("warmup", 0)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"{where}.warmup={warmup!r}: must be an integer number of steps >= 0")
    return Schedule(kind, float(numbers["start"]), float(numbers["end"]), warmup)


def find(where: str, value: Any) -> Any:
    """``value`` with every schedule mapping (at any depth) parsed into a ``Schedule``."""
    if is_schedule(value):
        return parse(where, value)
    if isinstance(value, Mapping):
        return {k: find(f"{where}.{k}", v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [find(f"{where}[{i}]", v) for i, v in enumerate(value)]
    return value


def contains(value: Any) -> bool:
    """Whether ``find``'s output holds any schedule."""
    if isinstance(value, Schedule):
        return True
    if isinstance(value, Mapping):
        return any(contains(v) for v in value.values())
    if isinstance(value, list):
        return any(contains(v) for v in value)
    return False


def resolve(value: Any, evaluate: Callable[[Schedule], float]) -> Any:
    """``find``'s output with every ``Schedule`` replaced by ``evaluate(schedule)``."""
    if isinstance(value, Schedule):
        return evaluate(value)
    if isinstance(value, Mapping):
        return {k: resolve(v, evaluate) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, evaluate) for v in value]
    return value
