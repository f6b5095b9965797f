"""Which way is better for each metric: the one table a new metric extends.

A metric's direction is that of the first pattern found in its name (``re.search``), so more
specific patterns come first: ``rgb->depth/abs_rel`` is an error, ``rgb->depth/delta1`` a score.
"""

from __future__ import annotations

import re
from typing import Literal

Direction = Literal["lower", "higher"]

DIRECTIONS: list[tuple[str, Direction]] = [
    (r"loss", "lower"),
    (r"abs_rel", "lower"),
    (r"acc", "higher"),
    (r"miou", "higher"),
    (r"delta1", "higher"),
    (r"verifier", "higher"),
    (r"probe", "higher"),
]

ARROWS = {"lower": "↓", "higher": "↑"}


def direction(metric: str) -> Direction | None:
    """``lower`` or ``higher`` is better; None for a metric no pattern covers."""
    return next((d for pattern, d in DIRECTIONS if re.search(pattern, metric)), None)


def known_patterns() -> str:
    return ", ".join(f"{p!r} ({d})" for p, d in DIRECTIONS)
