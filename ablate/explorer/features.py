"""How the models' encoder features differ: a 2-D PCA of each model's features over held-out scenes.

Features are mean-pooled encoder outputs of rgb-only inputs (as the count probe uses them,
``model.evaluate.encoder_features``); each model gets its own projection, fitted once.
Points are colored by a scene attribute read off the ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch

from model.scenes import SceneConfig, Scenes

Attribute = Literal["objects", "leftmost color", "leftmost shape", "leftmost size"]
ATTRIBUTES: tuple[str, ...] = get_args(Attribute)


def attribute_labels(cfg: SceneConfig, scenes: Scenes, attribute: str) -> list[str]:
    """One label per scene: its number of visible objects, or a property of its leftmost object."""
    if attribute == "objects":
        return [str(n) for n in scenes.present.sum(1)]
    leftmost = scenes.order()[:, 0]
    field, names = {"leftmost color": ("color", cfg.colors), "leftmost shape": ("shape", cfg.shapes),
                    "leftmost size": ("size", list(cfg.sizes))}[attribute]
    values = np.take_along_axis(getattr(scenes, field), leftmost[:, None], 1)[:, 0]
    return [names[v] for v in values]


@dataclass
class Projection:
    """The top two principal axes of a set of features."""

    mean: torch.Tensor  # [D]
    axes: torch.Tensor  # [D, 2]

    @classmethod
    def fit(cls, features: torch.Tensor) -> Projection:
        """features: float [N, D] (N >= 2)."""
        mean = features.mean(0)
        _, _, vh = torch.linalg.svd(features - mean, full_matrices=False)
        return cls(mean, vh[:2].T)

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """[M, D] -> [M, 2]."""
        return (features - self.mean) @ self.axes
