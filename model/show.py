"""Pictures of scenes: every modality decoded from its tokens next to its ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from model.build import load_tokenizers, scene_config  # noqa: E402
from model.dataset import DatasetSpec, load_split  # noqa: E402
from model.modalities import MODALITIES, colormap  # noqa: E402
from model.scenes import parse_boxes, render  # noqa: E402


def draw(ax, name: str, value, canvas: int, num_classes: int) -> None:
    """Draw one modality's native value (image array or word list) on an axis."""
    ax.set_xticks([])
    ax.set_yticks([])
    if isinstance(value, np.ndarray):  # an image
        cmap = colormap(name, value)
        ax.imshow(value, **(cmap.imshow() if cmap else {}))
    elif name == "boxes":
        ax.imshow(np.full((canvas, canvas, 3), 0.95))
        for cls, (x0, y0, x1, y1) in parse_boxes(value):
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, lw=1.2, ec="k"))
            ax.text(x0, y0, cls.replace("_", " "), fontsize=5, va="bottom")
    else:
        ax.imshow(np.ones((canvas, canvas, 3)))
        text = " ".join(value)
        ax.text(0.03, 0.97, "\n".join(_wrap(text, 22)), transform=ax.transAxes, fontsize=5.5, va="top")


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + [line]


def show(root: Path | str, out: Path | str, num_scenes: int = 4, split: str = "val") -> Path:
    """Write a PNG: per scene, two rows (ground truth, decoded tokens) by modality columns."""
    spec = DatasetSpec.load(root)
    cfg, seed = scene_config(spec), spec.generator["seed"]
    tokenizers = load_tokenizers(root)
    tokens = load_split(root, split)
    scenes = render(cfg, seed, split, np.arange(num_scenes))
    names = list(spec.modalities)
    fig, axes = plt.subplots(2 * num_scenes, len(names), figsize=(1.6 * len(names), 3.2 * num_scenes), squeeze=False)
    for col, name in enumerate(names):
        m = spec.modalities[name]
        truth = MODALITIES[name].truth(cfg, scenes)
        ids = tokens[name][:num_scenes].numpy().reshape(num_scenes, *m.array_shape)
        decoded = tokenizers[name].decode(ids)
        for i in range(num_scenes):
            draw(axes[2 * i, col], name, truth[i], cfg.canvas, cfg.num_classes)
            draw(axes[2 * i + 1, col], name, decoded[i], cfg.canvas, cfg.num_classes)
            if i == 0:
                axes[0, col].set_title(name, fontsize=9)
            if col == 0:
                axes[2 * i, 0].set_ylabel(f"scene {i}\ntruth", fontsize=7)
                axes[2 * i + 1, 0].set_ylabel("from tokens", fontsize=7)
    return _save(fig, out)


def generation_figure(
    given_native: dict[str, Any],
    generated_native: dict[str, Any],
    truth_native: dict[str, Any],
    out: Path | str,
    canvas: int = 32,
    num_classes: int = 5,
) -> Path:
    """Write a PNG: one row per scene; columns: the given inputs, the generated outputs, their ground truth.

    Each dict maps a modality to its native values for the same scenes (image arrays or word lists).
    """
    columns = [
        (f"{role} {name}", name, values)
        for role, native in (("given", given_native), ("generated", generated_native), ("truth", truth_native))
        for name, values in native.items()
    ]
    rows = len(columns[0][2])
    fig, axes = plt.subplots(rows, len(columns), figsize=(1.6 * len(columns), 1.6 * rows), squeeze=False)
    for col, (title, name, values) in enumerate(columns):
        axes[0, col].set_title(title, fontsize=7)
        for row in range(rows):
            draw(axes[row, col], name, values[row], canvas, num_classes)
    for row in range(rows):
        axes[row, 0].set_ylabel(f"scene {row}", fontsize=7)
    return _save(fig, out)


def _save(fig: plt.Figure, out: Path | str) -> Path:
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)
    return Path(out)
