"""The modalities of the generated data set, registered in one place.

A modality says how to read its ground truth off rendered scenes, which tokenizer it
uses, how to score a decoded sample against the truth (tokenizer fidelity) and, for a
single-channel image, the colormap every figure and the explorer draw it with. Adding a
modality is one ``Modality`` entry in ``MODALITIES`` (and, to be evaluated, a ``Task`` in
``model/tasks.py``). Masking needs nothing per modality: a preset's alphas give every
modality its value through their ``default`` key (``model/fit_to_data.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.scenes import SceneConfig, Scenes, box_vocabulary, box_words, caption_vocabulary, captions, max_caption_words
from model.tokenizers import DepthCodebook, LabelCodebook, RGBCodebook, WordTokenizer


@dataclass(frozen=True)
class Colormap:
    """How a single-channel image is drawn: matplotlib's ``cmap`` over [``vmin``, ``vmax``], pixels kept sharp."""

    cmap: str
    vmin: float
    vmax: float

    def imshow(self) -> dict[str, Any]:
        """Keyword arguments of ``Axes.imshow``."""
        return {"cmap": self.cmap, "vmin": self.vmin, "vmax": self.vmax, "interpolation": "nearest"}


@dataclass(frozen=True)
class Modality:
    name: str
    kind: str  # "image" or "sequence"
    truth: Callable[[SceneConfig, Scenes], Any]
    tokenizer: Callable[[SceneConfig, dict], Any]  # (scene config, codebook sizes) -> unfitted tokenizer
    fidelity: Callable[[Any, Any], dict[str, float]]  # (truth, decoded) -> named scores
    colormap: Colormap | None = None  # single-channel images only; rgb is drawn as it is


def colormap(name: str, image: np.ndarray) -> Colormap | None:
    """How every figure draws a native image of modality ``name``: None for an rgb one ([H, W, 3], as it is);
    a single channel with its modality's colormap, or (a data set brought along) gray over its own range."""
    if image.ndim == 3:
        return None
    entry = MODALITIES.get(name)
    if entry is not None and entry.colormap is not None:
        return entry.colormap
    return Colormap("gray", float(image.min()), float(image.max()) or 1.0)


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
        Modality("depth", "image", lambda c, s: s.depth, _image_tokenizer(DepthCodebook, "depth"), _depth_error,
                 Colormap("magma_r", 0.2, 1.0)),  # near is bright; the scenes' depths lie in [0.25, 0.9]
        Modality(
            "semseg",
            "image",
            lambda c, s: s.semseg,
            lambda cfg, sizes: LabelCodebook(sizes["patch"], sizes["semseg"], num_classes=cfg.num_classes),
            _pixel_accuracy,
            Colormap("tab10", 0, 9),  # one color per class id (background and the shapes)
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
