"""Native values as the page shows them: images as PNG data URLs (colored as ``model/show.py`` colors
them), sequences as words, boxes as parsed rectangles. The page scales images up without smoothing."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from matplotlib import colormaps
from PIL import Image

from model.modalities import parse_boxes

# Single-channel modalities: (colormap, value at its low end, value at its high end), as model/show.py draws them.
COLORS = {"depth": ("magma_r", 0.2, 1.0), "semseg": ("tab10", 0, 9)}


def to_rgb(name: str, image: np.ndarray) -> np.ndarray:
    """A native image [H, W] or [H, W, 3] -> uint8 [H, W, 3]."""
    if image.ndim == 3:
        return image.astype(np.uint8)
    cmap, low, high = COLORS.get(name, ("gray", float(image.min()), float(image.max()) or 1.0))
    scaled = (image.astype(np.float64) - low) / max(high - low, 1e-9)
    return (colormaps[cmap](np.clip(scaled, 0.0, 1.0))[..., :3] * 255).round().astype(np.uint8)


def png(name: str, image: np.ndarray) -> str:
    """A native image as a ``data:image/png;base64,...`` URL."""
    buffer = io.BytesIO()
    Image.fromarray(to_rgb(name, image)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def native(name: str, value: Any) -> dict:
    """One modality's native value as JSON for the page: {"png"} for images, {"words"} (+ "boxes") for sequences."""
    if isinstance(value, np.ndarray):
        return {"png": png(name, value)}
    out = {"words": list(value)}
    if name == "boxes":
        out["boxes"] = [[cls, *coords] for cls, coords in parse_boxes(value)]
    return out
