"""How the models' encoder features differ: the held-out scenes laid out by each model's features, in one frame.

Features are mean-pooled encoder outputs of rgb-only inputs (as the count probe uses them,
``model.evaluate.encoder_features``). One PCA over all models' features would mix unrelated coordinates
(``FRAME``), so each model gets its own 2-D PCA, which is then rotated onto the reference model's
(``align``): one frame, in which the same scenes land where the models agree. Points are colored by a scene
attribute read off the ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch

from model.scenes import SceneConfig, Scenes

FRAME = ("Each model learned its own feature space (feature i of one model has nothing to do with feature i of "
         "another), so one PCA over all of them would mix unrelated coordinates. What the models share is the scenes: "
         "each model's own 2-D PCA of the same held-out scenes is scaled and rotated (orthogonal Procrustes: a "
         "rotation or a reflection) onto the reference model's. Agreement is how well it then matches: 1 is the same "
         "layout of the scenes.")
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


@dataclass
class Aligned:
    """A model's own 2-D PCA, scaled to a unit root-mean-square radius over the fitted scenes and rotated onto
    the reference model's (``align``)."""

    projection: Projection
    scale: float
    rotation: torch.Tensor  # [2, 2], orthogonal
    agreement: float  # in [0, 1]: 1 when the fitted scenes' layout is the reference's up to rotation and scale

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """[M, D] -> [M, 2] in the reference's frame."""
        return (self.projection(features.double()) / self.scale) @ self.rotation


def align(features: dict[str, torch.Tensor], reference: str) -> dict[str, Aligned]:
    """Name -> features float [N, D_name] of the same N scenes (D may differ between models) -> name -> its
    projection into the reference's frame (orthogonal Procrustes of its own 2-D PCA onto the reference's)."""
    own = {}
    for name, f in features.items():
        projection = Projection.fit(f.double())
        points = projection(f.double())  # [N, 2], centered
        scale = float(points.pow(2).sum(1).mean().sqrt().clamp(min=1e-12))
        own[name] = projection, scale, points / scale
    target = own[reference][2]
    out = {}
    for name, (projection, scale, points) in own.items():
        u, s, vh = torch.linalg.svd(points.T @ target)  # argmax over orthogonal R of trace(R^T points^T target)
        out[name] = Aligned(projection, scale, u @ vh, float(s.sum()) / len(points))  # both have norm sqrt(N)
    return out
