"""Build the default data set: render scenes, fit tokenizers on train, write tokens and a report.

Writes into ``data.root``::

    spec.json, train/*.npy, val/*.npy     the pre-tokenized format (see model/dataset.py)
    tokenizers/<modality>.npz|.json       fitted tokenizers (load with ``load_tokenizers``)
    fidelity.json, fidelity.md            round-trip fidelity of every tokenizer on val
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate
from tqdm import tqdm

from model.config import DataConfig
from model.dataset import DatasetSpec, ModalitySpec, array_path
from model.modalities import MODALITIES, TOKENIZER_CLASSES
from model.scenes import SceneConfig, Scenes, render

CHUNK = 2_000


def render_split(cfg: DataConfig, split: str, size: int, progress: bool = True) -> Scenes:
    """Render ``size`` scenes of ``split`` in chunks, with a progress bar."""
    parts = []
    with tqdm(total=size, desc=f"render {split}", unit="scene", disable=not progress) as bar:
        for start in range(0, size, CHUNK):
            idx = np.arange(start, min(start + CHUNK, size))
            parts.append(render(cfg.scene, cfg.seed, split, idx))
            bar.update(len(idx))
    return Scenes(*(np.concatenate([getattr(p, f) for p in parts]) for f in Scenes.__dataclass_fields__))


def tokenizer_path(root: Path, name: str, tokenizer) -> Path:
    suffix = ".npz" if tokenizer.kind == "image" else ".json"
    return Path(root) / "tokenizers" / f"{name}{suffix}"


def load_tokenizers(root: Path | str) -> dict:
    """Modality -> fitted tokenizer, as saved by ``build``."""
    meta = json.loads((Path(root) / "tokenizers" / "index.json").read_text())
    return {name: TOKENIZER_CLASSES[cls].load(Path(root) / "tokenizers" / file) for name, (cls, file) in meta.items()}


def codebooks(root: Path | str) -> dict[str, torch.Tensor]:
    """Image modality -> its patch codebook's entries, float [V_m, F_m] (none for a folder without tokenizers)."""
    if not (Path(root) / "tokenizers" / "index.json").is_file():
        return {}
    return {name: t.centroids for name, t in load_tokenizers(root).items() if t.kind == "image"}


def scene_config(spec: DatasetSpec) -> SceneConfig:
    """The scene config a generated data set was rendered with."""
    return SceneConfig(**spec.generator["scene"])


def recipe(cfg: DataConfig) -> dict:
    """Everything that determines a built data set's content (not where it lives)."""
    d = asdict(cfg)
    d.pop("root")
    return d


def build(cfg: DataConfig, progress: bool = True, force: bool = False) -> dict[str, dict[str, float]]:
    """Build the data set in ``cfg.root``; returns the fidelity table (modality -> scores).

    A folder already built from the same recipe is reused unless ``force``. Writes into a
    temporary sibling folder first and swaps it in at the end, so an interrupted build
    never leaves a half-written data set behind.
    """
    root = Path(cfg.root)
    if not force and (root / "fidelity.json").is_file():
        spec = DatasetSpec.load(root)
        if spec.generator and spec.generator.get("recipe") == recipe(cfg):
            if progress:
                print(f"{root}: already built from this recipe, reusing it (force with --force)")
            return json.loads((root / "fidelity.json").read_text())
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "tokenizers").mkdir(parents=True)
    splits = {"train": cfg.train_size, "val": cfg.val_size}
    scenes = {s: render_split(cfg, s, n, progress) for s, n in splits.items()}

    specs, index, fidelity = {}, {}, {}
    sizes = asdict(cfg.codebook)
    for name, mod in tqdm(MODALITIES.items(), desc="tokenize", disable=not progress):
        truth = {s: mod.truth(cfg.scene, scenes[s]) for s in splits}
        tok = mod.tokenizer(cfg.scene, sizes)
        if hasattr(tok, "fit"):
            tok.fit(truth["train"], iters=cfg.codebook.iters, sample=cfg.codebook.sample, seed=cfg.seed)
        for split in splits:
            (tmp / split).mkdir(exist_ok=True)
            tokens = tok.encode(truth[split])
            np.save(array_path(tmp, split, name), tokens.astype(np.int32))
        fidelity[name] = mod.fidelity(truth["val"], tok.decode(tokens))
        path = tokenizer_path(tmp, name, tok)
        tok.save(path)
        index[name] = (type(tok).__name__, path.name)
        shape = tokens.shape[1:]
        specs[name] = ModalitySpec(
            name,
            mod.kind,
            tok.vocab_size,
            grid=tuple(shape) if mod.kind == "image" else None,
            max_len=shape[0] if mod.kind == "sequence" else None,
        )

    (tmp / "tokenizers" / "index.json").write_text(json.dumps(index, indent=2))
    generator = {"seed": cfg.seed, "scene": asdict(cfg.scene), "recipe": recipe(cfg)}
    DatasetSpec(specs, splits, generator).save(tmp)
    (tmp / "fidelity.json").write_text(json.dumps(fidelity, indent=2))
    (tmp / "fidelity.md").write_text(fidelity_table(fidelity) + "\n")
    if root.exists():
        shutil.rmtree(root)
    tmp.rename(root)
    return fidelity


def fidelity_table(fidelity: dict[str, dict[str, float]]) -> str:
    """Markdown table of tokenizer round-trip scores on the validation split."""
    rows = [(name, metric, f"{value:.4g}") for name, scores in fidelity.items() for metric, value in scores.items()]
    return tabulate(rows, headers=["modality", "round-trip metric (val)", "value"], tablefmt="github")
