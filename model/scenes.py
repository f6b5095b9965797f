"""Procedural aligned scenes: every modality is exact ground truth of one object list.

A scene is a canvas with a few objects (shape, color, size, position, depth). Nearer
objects (smaller depth) occlude farther ones in every modality at once. Objects that end
up fully hidden are dropped from the scene, so captions and boxes only name what is seen.

Scene ``i`` of a split depends only on ``(seed, split, i)``: any slice of a data set can be
regenerated on its own. Rendering is vectorized over a chunk of scenes and all pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SPLITS = {"train": 0, "val": 1, "test": 2}

COLOR_RGB = {
    "red": (0.86, 0.16, 0.14),
    "green": (0.15, 0.70, 0.22),
    "blue": (0.16, 0.32, 0.90),
    "yellow": (0.95, 0.85, 0.15),
    "purple": (0.58, 0.22, 0.78),
    "cyan": (0.15, 0.80, 0.85),
    "orange": (0.98, 0.52, 0.10),
    "white": (0.97, 0.97, 0.97),
}
SHAPES = ("circle", "square", "triangle", "diamond")


@dataclass
class SceneConfig:
    """What scenes look like. Sizes are radii as a fraction of the canvas."""

    canvas: int = 32
    min_objects: int = 1
    max_objects: int = 4
    shapes: list[str] = field(default_factory=lambda: list(SHAPES))
    colors: list[str] = field(default_factory=lambda: list(COLOR_RGB))
    sizes: dict[str, float] = field(default_factory=lambda: {"small": 0.11, "large": 0.19})
    min_depth: float = 0.25
    max_depth: float = 0.9

    def validate(self) -> None:
        if self.canvas < 8:
            raise ValueError(f"data.scene.canvas={self.canvas}: must be at least 8 pixels")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"data.scene.min_objects={self.min_objects}, max_objects={self.max_objects}: "
                "need 1 <= min_objects <= max_objects"
            )
        if unknown := sorted(set(self.shapes) - set(SHAPES)):
            raise ValueError(f"data.scene.shapes: unknown {unknown}; allowed {list(SHAPES)}")
        if unknown := sorted(set(self.colors) - set(COLOR_RGB)):
            raise ValueError(f"data.scene.colors: unknown {unknown}; allowed {list(COLOR_RGB)}")
        if not self.sizes or not all(0.02 <= s <= 0.45 for s in self.sizes.values()):
            raise ValueError(f"data.scene.sizes={dict(self.sizes)}: radii must lie in [0.02, 0.45]")
        if not 0.0 < self.min_depth < self.max_depth < 1.0:
            raise ValueError("data.scene: need 0 < min_depth < max_depth < 1")

    @property
    def num_classes(self) -> int:
        """Semantic classes: background plus one per shape."""
        return len(self.shapes) + 1


@dataclass
class Scenes:
    """A batch of rendered scenes. Objects are padded to ``max_objects`` slots.

    rgb:     uint8   [B, H, W, 3]
    depth:   float32 [B, H, W], in (0, 1], background = far plane near 1
    semseg:  uint8   [B, H, W], 0 = background, 1 + shape index otherwise
    present: bool    [B, K]  slot holds a visible object
    shape, color, size: int64 [B, K]  indices into the config's lists
    center:  float32 [B, K, 2] (x, y) in pixels
    z:       float32 [B, K]  depth of each object
    box:     int64   [B, K, 4] visible extent (x0, y0, x1, y1), inclusive pixel coordinates
    """

    rgb: np.ndarray
    depth: np.ndarray
    semseg: np.ndarray
    present: np.ndarray
    shape: np.ndarray
    color: np.ndarray
    size: np.ndarray
    center: np.ndarray
    z: np.ndarray
    box: np.ndarray

    def __len__(self) -> int:
        return len(self.rgb)

    def order(self) -> np.ndarray:
        """Object slots of each scene left to right, absent slots last: int64 [B, K]."""
        key = np.where(self.present, self.center[..., 0], np.inf)
        return np.argsort(key, axis=1, kind="stable")


# Every scene draws this many uniforms per object slot, plus one for its object count.
_PARAMS_PER_OBJECT = 7


def _scene_uniforms(seed: int, split: str, indices: np.ndarray, k: int) -> np.ndarray:
    """Uniform draws [B, 1 + K * P] that depend only on (seed, split, index)."""
    split_id = SPLITS[split]
    return np.stack(
        [np.random.default_rng([seed, split_id, int(i)]).random(1 + k * _PARAMS_PER_OBJECT) for i in indices]
    )


def _inside(shape: np.ndarray, dx: np.ndarray, dy: np.ndarray, r: np.ndarray, names: list[str]):
    """Which pixels lie inside each object. All arguments broadcast to [B, K, H, W]."""
    u, v = dx / r, dy / r
    tests = {
        "circle": u**2 + v**2 <= 1.0,
        "square": np.maximum(np.abs(u), np.abs(v)) <= 0.85,
        "triangle": (v >= -1.0) & (v <= 0.8) & (np.abs(u) <= (v + 1.0) / 1.8),
        "diamond": np.abs(u) + np.abs(v) <= 1.15,
    }
    inside = np.zeros(np.broadcast_shapes(shape.shape, dx.shape), dtype=bool)
    for i, name in enumerate(names):
        inside |= (shape == i) & tests[name]
    return inside


def render(cfg: SceneConfig, seed: int, split: str, indices: np.ndarray) -> Scenes:
    """Render scenes ``indices`` of ``split``. Vectorized over scenes and pixels."""
    k, h = cfg.max_objects, cfg.canvas
    u = _scene_uniforms(seed, split, np.asarray(indices), k)
    b = len(u)
    count = cfg.min_objects + np.floor(u[:, 0] * (cfg.max_objects - cfg.min_objects + 1)).astype(int)
    p = u[:, 1:].reshape(b, k, _PARAMS_PER_OBJECT)
    radii = np.asarray(list(cfg.sizes.values()), dtype=np.float32) * h

    placed = np.arange(k)[None, :] < count[:, None]
    shape = np.floor(p[..., 0] * len(cfg.shapes)).astype(np.int64)
    color = np.floor(p[..., 1] * len(cfg.colors)).astype(np.int64)
    size = np.floor(p[..., 2] * len(radii)).astype(np.int64)
    r = radii[size]
    center = np.stack([r + p[..., 3] * (h - 2 * r), r + p[..., 4] * (h - 2 * r)], -1).astype(np.float32)
    z = (cfg.min_depth + p[..., 5] * (cfg.max_depth - cfg.min_depth)).astype(np.float32)

    ys, xs = np.mgrid[0:h, 0:h].astype(np.float32) + 0.5
    dx = xs[None, None] - center[..., 0, None, None]  # [B, K, H, W]
    dy = ys[None, None] - center[..., 1, None, None]
    inside = _inside(shape[..., None, None], dx, dy, r[..., None, None], cfg.shapes)
    inside &= placed[..., None, None]

    # z-buffer: the nearest object covering a pixel wins in every modality.
    zbuf = np.where(inside, z[..., None, None], np.inf)
    front = zbuf.argmin(1)  # [B, H, W]
    covered = np.isfinite(zbuf.min(1))
    visible = (front[:, None] == np.arange(k)[None, :, None, None]) & covered[:, None]  # [B, K, H, W]
    present = visible.any((2, 3))

    # Shading: light from the top-left, and distance haze so depth shows in rgb.
    shade = np.clip(1.05 - 0.35 * ((dx + dy) / (2 * r[..., None, None]) + 0.5), 0.6, 1.05)
    haze = 1.0 - 0.35 * (z - cfg.min_depth) / (cfg.max_depth - cfg.min_depth)
    palette = np.asarray([COLOR_RGB[c] for c in cfg.colors], dtype=np.float32)
    obj_rgb = palette[color][..., None, None, :] * (shade * haze[..., None, None])[..., None]
    background = (0.42 + 0.18 * ys / h)[None, ..., None].repeat(3, -1)  # [1, H, W, 3]
    rgb = np.where(covered[..., None], 0.0, background)
    rgb = rgb + (visible[..., None] * obj_rgb).sum(1)
    rgb = np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)

    floor_depth = 1.0 - 0.06 * ys / h  # the floor recedes towards the top
    depth = np.where(covered, zbuf.min(1), floor_depth[None]).astype(np.float32)
    semseg = np.where(covered, 1 + np.take_along_axis(shape, front.reshape(b, -1), 1).reshape(front.shape), 0)

    rows, cols = visible.any(3), visible.any(2)  # [B, K, H], [B, K, W]
    box = np.stack(
        [cols.argmax(-1), rows.argmax(-1), h - 1 - cols[..., ::-1].argmax(-1), h - 1 - rows[..., ::-1].argmax(-1)],
        -1,
    )
    box = np.where(present[..., None], box, 0)
    return Scenes(
        rgb=rgb,
        depth=depth,
        semseg=semseg.astype(np.uint8),
        present=present,
        shape=shape,
        color=color,
        size=size,
        center=center,
        z=z,
        box=box.astype(np.int64),
    )


def captions(cfg: SceneConfig, scenes: Scenes) -> list[list[str]]:
    """One caption per scene, as words: objects left to right, then one spatial relation.

    Example: ``small red circle and large blue square . the red circle is above the blue square``
    """
    sizes = list(cfg.sizes)
    order = scenes.order()
    out = []
    for b in range(len(scenes)):
        objs = [k for k in order[b] if scenes.present[b, k]]
        names = [(cfg.colors[scenes.color[b, k]], cfg.shapes[scenes.shape[b, k]]) for k in objs]
        words: list[str] = []
        for i, k in enumerate(objs):
            words += (["and"] if i else []) + [sizes[scenes.size[b, k]], *names[i]]
        if len(objs) >= 2:
            above = scenes.center[b, objs[0], 1] < scenes.center[b, objs[1], 1]
            words += [".", "the", *names[0], "is", "above" if above else "below", "the", *names[1]]
        out.append(words)
    return out


def caption_vocabulary(cfg: SceneConfig) -> list[str]:
    """Every word a caption can contain, in a fixed order."""
    return [*cfg.sizes, *cfg.colors, *cfg.shapes, "and", ".", "the", "is", "above", "below"]


def max_caption_words(cfg: SceneConfig) -> int:
    """Longest caption: 3 words per object, ``and`` between them, an 8-word relation."""
    k = cfg.max_objects
    return 3 * k + (k - 1) + (9 if k >= 2 else 0)


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
