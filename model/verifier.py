"""A hand-written verifier for caption->rgb: does an image show the objects a caption names (and no others)?

No learned model: it knows how the scene renderer draws. The background is gray with a
vertical gradient and every object color is a palette hue scaled by shading and haze, so
a pixel's hue (its color divided by its brightest channel) names its palette color whatever
the shading. White shares the background's hue and is told apart by its brightness instead.
Each connected region of one color is classified as the shape whose ideal silhouette,
stretched over the region's bounding box, overlaps it best (IoU).

It is not perfect: occluded objects lose their silhouette and far white objects fade into
the background. On the renderer's own images it scores about 0.85 on true pairs and 0.08
on mismatched ones; on images round-tripped through the rgb tokenizer about 0.69, the
ceiling a generator of rgb tokens can reach (``evaluate.token_ceilings`` reports it).
"""

from __future__ import annotations

import numpy as np

from model.metrics import caption_objects
from model.scenes import COLOR_RGB, SceneConfig

SATURATION = 0.25  # below: achromatic (background or white)
WHITE_MARGIN = 0.1  # an achromatic pixel this far from the background brightness is white
MIN_AREA = 0.3  # of the smallest object's area: smaller regions are noise or slivers
EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity: a triangle's apex joins diagonally


def background(height: int) -> np.ndarray:
    """The renderer's background brightness per row: float [H] (gray, lighter towards the bottom)."""
    return 0.42 + 0.18 * (np.arange(height) + 0.5) / height


def color_map(rgb: np.ndarray, cfg: SceneConfig) -> np.ndarray:
    """Palette color index per pixel, -1 for background: uint8 [H, W, 3] -> int64 [H, W] (index into cfg.colors)."""
    x = rgb.astype(np.float64) / 255.0
    bright = x.max(-1)
    hue = x / np.maximum(bright, 1e-6)[..., None]
    saturation = 1.0 - hue.min(-1)
    palette = np.array([COLOR_RGB[c] for c in cfg.colors])
    palette_hue = palette / palette.max(-1, keepdims=True)
    chromatic = 1.0 - palette_hue.min(-1) >= SATURATION
    dist = ((hue[..., None, :] - palette_hue) ** 2).sum(-1)  # [H, W, C]
    nearest_chromatic = np.where(chromatic, dist, np.inf).argmin(-1)
    out = np.where(saturation >= SATURATION, nearest_chromatic, -1)
    if "white" in cfg.colors:
        far_from_background = np.abs(bright - background(len(rgb))[:, None]) > WHITE_MARGIN
        out = np.where((saturation < SATURATION) & far_from_background, cfg.colors.index("white"), out)
    return out


def silhouettes(height: int, width: int, shapes: list[str]) -> np.ndarray:
    """Ideal shape masks stretched over a height x width box: bool [S, h, w], in the renderer's orientation."""
    v, u = np.meshgrid((np.arange(height) + 0.5) / height * 2 - 1, (np.arange(width) + 0.5) / width * 2 - 1,
                       indexing="ij")
    masks = {
        "circle": u**2 + v**2 <= 1.0,
        "square": np.ones_like(u, dtype=bool),
        "triangle": np.abs(u) <= (v + 1.0) / 2.0,  # apex up, base down
        "diamond": np.abs(u) + np.abs(v) <= 1.0,
    }
    return np.stack([masks[s] for s in shapes])


def _absorb_fragments(colors: np.ndarray, min_area: float) -> np.ndarray:
    """Recolor, within each foreground blob, colors too rare to be an object to the blob's main color.

    Decoded patches mix an object's color with its shading and its neighbors, leaving small
    off-color fragments that would otherwise split one object into several regions.
    """
    from scipy import ndimage  # a third of a second to import: only where images are verified, not with model.tasks

    blobs, count = ndimage.label(colors >= 0, EIGHT)
    num_colors = colors.max() + 2
    votes = np.bincount(blobs.ravel() * num_colors + colors.ravel() + 1, minlength=(count + 1) * num_colors)
    votes = votes.reshape(count + 1, num_colors)
    rare = votes[blobs, colors + 1] < min_area
    return np.where(rare & (blobs > 0), votes.argmax(1)[blobs] - 1, colors)


def detect(rgb: np.ndarray, cfg: SceneConfig) -> list[tuple[str, str]]:
    """(color, shape) of every object-sized region of one image uint8 [H, W, 3]."""
    from scipy import ndimage

    radius = min(cfg.sizes.values()) * cfg.canvas
    min_area = MIN_AREA * np.pi * radius**2
    colors = _absorb_fragments(color_map(rgb, cfg), min_area)
    found = []
    for c in np.unique(colors[colors >= 0]):
        labels, _ = ndimage.label(colors == c, EIGHT)
        for i, box in enumerate(ndimage.find_objects(labels), start=1):
            region = labels[box] == i
            if region.sum() < min_area:
                continue
            ideal = silhouettes(*region.shape, cfg.shapes)
            iou = (ideal & region).sum((1, 2)) / (ideal | region).sum((1, 2))
            found.append((cfg.colors[c], cfg.shapes[int(iou.argmax())]))
    return found


def verify(rgb: np.ndarray, words: list[str], cfg: SceneConfig) -> tuple[int, int]:
    """(named objects found, max(named objects, regions detected)) for one image and caption.

    Each region can be claimed once. Counting out of the larger of the two makes extra regions
    cost as much as missing ones, so an image of colorful noise cannot pass by naming everything.
    """
    named = [(color, shape) for _, color, shape in caption_objects(words, cfg)]
    regions = detect(rgb, cfg)
    out_of = max(len(named), len(regions))
    hits = 0
    for obj in named:
        if obj in regions:
            regions.remove(obj)
            hits += 1
    return hits, out_of


def verifier_score(images: np.ndarray, captions: list[list[str]], cfg: SceneConfig) -> float:
    """Pooled ``verify`` over uint8 images [B, H, W, 3] and B captions: 1 when every image shows
    exactly the named (color, shape) objects."""
    counts = np.array([verify(img, words, cfg) for img, words in zip(images, captions)]).reshape(-1, 2)
    return float(counts[:, 0].sum() / max(counts[:, 1].sum(), 1))
