"""Native values as the page shows them: images as PNG data URLs (colored by their modality's colormap,
``model/modalities.py``, as every figure is), sequences as words, boxes as parsed rectangles. The page
scales images up without smoothing."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from matplotlib import colormaps
from PIL import Image

from model.modalities import colormap
from model.scenes import parse_boxes


def to_rgb(name: str, image: np.ndarray) -> np.ndarray:
    """A native image [H, W] or [H, W, 3] -> uint8 [H, W, 3]."""
    if image.ndim == 3:
        return image.astype(np.uint8)
    cmap = colormap(name, image)
    scaled = (image.astype(np.float64) - cmap.vmin) / max(cmap.vmax - cmap.vmin, 1e-9)
    return (colormaps[cmap.cmap](np.clip(scaled, 0.0, 1.0))[..., :3] * 255).round().astype(np.uint8)


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
