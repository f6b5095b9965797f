"""A picture of what masking families hide: one real scene, one row per family.

Image modalities are decoded from their tokens with the grid drawn over them: cells the
encoder sees are clear, targets are red, hidden cells that are not predicted are dark.
Sequences are drawn as their words in cells with the same colors (captions 4 words a row, so
each row is one object and its ``and``; boxes 5 tokens a row, one object each).

    .venv/bin/python -m model.mask_figure DATA_ROOT docs/masking_families.png

draws every masking preset (``model/conf/masking/``), as in ``docs/masking.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from model.batch import DecoderInput, Masks
from model.build import load_tokenizers
from model.config import compose, group_options
from model.dataset import DatasetSpec, ModalitySpec, load_split
from model.fit_to_data import AUTO, default_budgets
from model.masking import MaskingStrategy, build_masking
from model.modalities import colormap
from model.tokenizers import PAD

INPUT, TARGET, HIDDEN = "white", "#e8413c", "#3a3a3a"
ROW_WORDS = {"caption": 4, "boxes": 5}  # sequence tokens per drawn row


def pick_scene(tokens: dict[str, torch.Tensor], min_objects: int = 3) -> int:
    """The first scene with at least ``min_objects`` objects (by its boxes length), else scene 0."""
    if "boxes" not in tokens:
        return 0
    objects = ((tokens["boxes"] != PAD).sum(1) - 1) // 5
    many = (objects >= min_objects).nonzero()
    return int(many[0]) if len(many) else 0


def masked_scene_figure(
    data_root: Path | str,
    families: dict[str, tuple[str, dict[str, Any]] | MaskingStrategy],
    out: Path | str,
    input_budget: int = 128,
    target_budget: int = 64,
    index: int | None = None,
    seed: int = 0,
) -> Path:
    """Write a PNG with one row per family: label -> (family name, params) or a built strategy.

    Every family masks the same validation scene (``index``, default: ``pick_scene``) with a
    generator seeded ``seed``; (name, params) entries are built with the given budgets unless
    their params name ``input_budget``/``target_budget`` (as presets do).
    """
    spec = DatasetSpec.load(data_root)
    specs = spec.modalities
    tokenizers = load_tokenizers(data_root)
    data = load_split(data_root, "val")
    index = pick_scene(data) if index is None else index
    sample = {n: t[index : index + 1] for n, t in data.items()}
    images = [n for n in specs if specs[n].kind == "image"]
    sequences = [n for n in specs if specs[n].kind == "sequence"]
    widths = [1.0] * len(images) + [0.5 * ROW_WORDS.get(n, 5) for n in sequences]
    fig = Figure(figsize=(1.6 * sum(widths) + 1.2, 1.75 * len(families) + 0.7), layout="constrained")
    axes = fig.subplots(len(families), len(widths), squeeze=False, gridspec_kw={"width_ratios": widths})
    for row, (label, family) in enumerate(families.items()):
        if not isinstance(family, MaskingStrategy):
            params = dict(family[1])
            budgets = params.pop("input_budget", input_budget), params.pop("target_budget", target_budget)
            family = build_masking(family[0], specs, *_fitted(budgets, specs), params)
        masks = family(sample, torch.Generator().manual_seed(seed))
        masks = {n: Masks(m.input[0], m.target[0]) for n, m in masks.items()}
        for ax, name in zip(axes[row], [*images, *sequences]):
            if specs[name].kind == "image":
                _image(ax, name, tokenizers[name], sample[name][0], specs[name].grid, masks[name])
            else:
                _words(ax, tokenizers[name], sample[name][0], masks[name], ROW_WORDS.get(name, 5))
            if row == 0:
                ax.set_title(name, fontsize=11)
        axes[row, 0].set_ylabel(label, fontsize=10, rotation=0, ha="right", va="center", labelpad=8)
    fig.legend(
        handles=[Patch(fc=INPUT, ec="k", label="input (encoder sees it)"), Patch(fc=TARGET, label="target (predicted)"),
                 Patch(fc=HIDDEN, label="hidden, not predicted")],
        loc="outside upper center", ncols=3, fontsize=10, frameon=False,
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def _image(ax, name: str, tokenizer, tokens: torch.Tensor, grid: tuple[int, int], masks: Masks) -> None:
    """The decoded image with its grid cells tinted by role."""
    h, w = grid
    decoded = tokenizer.decode(tokens.view(1, h, w).numpy())[0]
    size = decoded.shape[0]
    cmap = colormap(name, decoded)
    ax.imshow(decoded, extent=(0, size, size, 0), **(cmap.imshow() if cmap else {}))
    cell = size / w
    overlay = np.zeros((h, w, 4))
    overlay[~masks.input.view(h, w).numpy()] = (0.23, 0.23, 0.23, 0.82)
    overlay[masks.target.view(h, w).numpy()] = (0.91, 0.25, 0.24, 0.62)
    ax.imshow(overlay, extent=(0, size, size, 0), interpolation="nearest")
    for k in range(1, w):
        ax.axvline(k * cell, color="white", lw=0.3, alpha=0.6)
    for k in range(1, h):
        ax.axhline(k * cell, color="white", lw=0.3, alpha=0.6)
    ax.set_xticks([])
    ax.set_yticks([])


def _words(ax, tokenizer, tokens: torch.Tensor, masks: Masks, per_row: int) -> None:
    """The sequence's tokens (through EOS) as cells of ``per_row`` per row, colored by role."""
    ids = tokens[tokens != PAD].tolist()
    rows = -(-max(len(ids), 1) // per_row)
    ax.set_xlim(0, per_row)
    ax.set_ylim(max(rows, 6), 0)
    ax.set_axis_off()
    for i, token in enumerate(ids):
        r, c = divmod(i, per_row)
        role = TARGET if masks.target[i] else INPUT if masks.input[i] else HIDDEN
        ax.add_patch(Rectangle((c + 0.03, r + 0.06), 0.94, 0.88, fc=role, ec="#999999", lw=0.5))
        word = tokenizer.tokens[token].replace("_", " ")
        ax.text(c + 0.5, r + 0.5, word, ha="center", va="center", fontsize=7.5 if len(word) < 9 else 6,
                color="black" if role == INPUT else "white")


def _fitted(budgets: tuple[int | str, int | str], specs: dict[str, ModalitySpec]) -> tuple[int, int]:
    """A preset's budgets with ``auto`` resolved for the data set (``model/fit_to_data.py``)."""
    defaults = default_budgets(sum(s.num_tokens for s in specs.values()))
    return tuple(default if value == AUTO else value for value, default in zip(budgets, defaults))


def preset(name: str) -> tuple[str, dict[str, Any]]:
    """The masking preset ``masking=<name>`` (``model/conf/masking/<name>.yaml``) as (family, params incl.
    budgets)."""
    params = dict(compose([f"masking={name}"]).masking)
    return params.pop("name"), params


def planted_hard(specs: dict[str, ModalitySpec], random_fraction: float = 0.5) -> MaskingStrategy:
    """The ``hard`` preset after observing an illustrative loss map (no model involved): loss 5 on the
    right half of every image grid and on the boxes tokens, 0.05 elsewhere."""
    family, params = preset("hard")
    params["random_fraction"] = random_fraction
    budgets = _fitted((params.pop("input_budget"), params.pop("target_budget")), specs)
    strategy = build_masking(family, specs, *budgets, params)
    names = sorted(specs)
    modality = torch.cat([torch.full((specs[n].num_tokens,), i) for i, n in enumerate(names)])[None]
    position = torch.cat([torch.arange(specs[n].num_tokens) for n in names])[None]
    hard = torch.cat([
        (torch.arange(s.num_tokens) % s.grid[1] >= s.grid[1] // 2) if s.kind == "image"
        else torch.full((s.num_tokens,), n == "boxes")
        for n, s in ((n, specs[n]) for n in names)
    ])[None]
    zeros = torch.zeros_like(position)
    dec = DecoderInput(zeros, zeros, modality, position, torch.zeros_like(hard))
    strategy.observe(dec, 0.05 + 4.95 * hard.double())
    return strategy


def main() -> None:
    parser = argparse.ArgumentParser(description="Draw every masking preset on one real scene.")
    parser.add_argument("data_root")
    parser.add_argument("out")
    args = parser.parse_args()
    specs = DatasetSpec.load(args.data_root).modalities
    rows: dict[str, tuple[str, dict[str, Any]] | MaskingStrategy] = {}
    for name in group_options()["masking"]:
        if name == "hard":  # unplanted, it is random masking with the preset's random fraction
            rows["hard\n(planted\nloss map)"] = planted_hard(specs)
        else:
            rows[name.replace("_", "\n")] = preset(name)
    family, params = preset("aligned")
    rows["aligned\nblocks +\nhide_objects"] = (family, params | {"region": "blocks", "hide_objects": True})
    print(masked_scene_figure(args.data_root, rows, args.out))


if __name__ == "__main__":
    main()
