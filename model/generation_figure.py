"""``ablate generate``: a trained run generates modalities from others on validation scenes, drawn next to their
ground truth (``model.show.generation_figure``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from model.build import load_tokenizers, scene_config
from model.checkpoint import load_run
from model.config import ConfigError
from model.dataset import DatasetSpec, load_split
from model.evaluate import decode_tokens
from model.generate import generate
from model.modalities import MODALITIES
from model.scenes import render
from model.show import generation_figure


def draw_generation(run: Path, out: Path, given: list[str], targets: list[str], first: int = 0, scenes: int = 4,
                    steps: int = 8, seed: int = 0) -> Path:
    """Write a PNG of validation scenes ``first`` .. ``first + scenes - 1``: the ``given`` modalities, the
    ``targets`` the run in folder ``run`` generates from them (chained in that order, ``steps`` ROAR steps per
    image modality, generation seed ``seed``) and the targets' ground truth."""
    model, cfg, specs = load_run(run)
    unknown = [m for m in given + targets if m not in specs]
    if unknown:
        raise ConfigError(f"unknown modality {unknown}; the run's data set has {sorted(specs)}")
    idx = np.arange(first, first + scenes)
    val = load_split(cfg.data.root, "val")
    inputs = {m: val[m][idx] for m in given}
    out_tokens = generate(model, specs, inputs, targets, torch.Generator().manual_seed(seed), steps).tokens
    tokenizers = load_tokenizers(cfg.data.root)
    spec_scene = scene_config(DatasetSpec.load(cfg.data.root))
    rendered = render(spec_scene, cfg.data.seed, "val", idx)
    return generation_figure(
        {m: decode_tokens(tokenizers[m], specs[m], t) for m, t in inputs.items()},
        {m: decode_tokens(tokenizers[m], specs[m], t) for m, t in out_tokens.items()},
        {m: MODALITIES[m].truth(spec_scene, rendered) for m in targets},
        out,
        canvas=spec_scene.canvas,
        num_classes=spec_scene.num_classes,
    )
