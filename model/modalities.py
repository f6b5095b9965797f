"""The modalities of the generated data set, registered in one place.

A modality says how to read its ground truth off rendered scenes, which tokenizer it
uses, and how to score a decoded sample against the truth (tokenizer fidelity). Adding a
modality is one ``Modality`` entry in ``MODALITIES``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.scenes import SceneConfig, Scenes, caption_vocabulary, captions, max_caption_words
from model.tokenizers import DepthCodebook, LabelCodebook, RGBCodebook, WordTokenizer


@dataclass(frozen=True)
class Modality:
    name: str
    kind: str  # "image" or "sequence"
    truth: Callable[[SceneConfig, Scenes], Any]
    tokenizer: Callable[[SceneConfig, dict], Any]  # (scene config, codebook sizes) -> unfitted tokenizer
    fidelity: Callable[[Any, Any], dict[str, float]]  # (truth, decoded) -> named scores


def box_words(cfg: SceneConfig, scenes: Scenes) -> list[list[str]]:
    """4M's detection format: per object left to right, a class word then 4 coordinate bins."""
    order = scenes.order()
    out = []
    for b in range(len(scenes)):
        words = []
        for k in order[b]:
            if scenes.present[b, k]:
                cls = f"{cfg.colors[scenes.color[b, k]]}_{cfg.shapes[scenes.shape[b, k]]}"
                words += [cls, *(f"@{v}" for v in scenes.box[b, k])]
        out.append(words)
    return out


def box_vocabulary(cfg: SceneConfig) -> list[str]:
    classes = [f"{c}_{s}" for c in cfg.colors for s in cfg.shapes]
    return classes + [f"@{v}" for v in range(cfg.canvas)]


def parse_boxes(words: list[str]) -> list[tuple[str, tuple[int, int, int, int]]]:
    """Box words back to (class, (x0, y0, x1, y1)); malformed groups are skipped."""
    boxes, i = [], 0
    while i + 5 <= len(words):
        cls, coords = words[i], words[i + 1 : i + 5]
        if "_" in cls and all(c.startswith("@") for c in coords):
            boxes.append((cls, tuple(int(c[1:]) for c in coords)))
            i += 5
        else:
            i += 1
    return boxes


def _psnr(truth: np.ndarray, decoded: np.ndarray) -> dict[str, float]:
    mse = np.mean((truth.astype(np.float64) - decoded.astype(np.float64)) ** 2)
    return {"psnr_db": float(10 * np.log10(255.0**2 / max(mse, 1e-12)))}


def _depth_error(truth: np.ndarray, decoded: np.ndarray) -> dict[str, float]:
    span = float(truth.max() - truth.min()) or 1.0
    return {"mae_pct_of_range": float(100 * np.abs(truth - decoded).mean() / span)}


def _pixel_accuracy(truth: np.ndarray, decoded: np.ndarray) -> dict[str, float]:
    return {"pixel_accuracy": float((truth == decoded).mean())}


def _exact(truth: list, decoded: list) -> dict[str, float]:
    return {"exact_match": float(np.mean([t == d for t, d in zip(truth, decoded)]))}


def _image_tokenizer(cls, key: str, **kw):
    return lambda cfg, sizes: cls(sizes["patch"], sizes[key], **kw)


MODALITIES: dict[str, Modality] = {
    m.name: m
    for m in [
        Modality("rgb", "image", lambda c, s: s.rgb, _image_tokenizer(RGBCodebook, "rgb"), _psnr),
        Modality("depth", "image", lambda c, s: s.depth, _image_tokenizer(DepthCodebook, "depth"), _depth_error),
        Modality(
            "semseg",
            "image",
            lambda c, s: s.semseg,
            lambda cfg, sizes: LabelCodebook(sizes["patch"], sizes["semseg"], num_classes=cfg.num_classes),
            _pixel_accuracy,
        ),
        Modality(
            "caption",
            "sequence",
            captions,
            lambda cfg, sizes: WordTokenizer(caption_vocabulary(cfg), max_caption_words(cfg) + 1),
            _exact,
        ),
        Modality(
            "boxes",
            "sequence",
            box_words,
            lambda cfg, sizes: WordTokenizer(box_vocabulary(cfg), 5 * cfg.max_objects + 1),
            _exact,
        ),
    ]
}

TOKENIZER_CLASSES = {cls.__name__: cls for cls in (RGBCodebook, DepthCodebook, LabelCodebook, WordTokenizer)}
