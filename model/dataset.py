"""The pre-tokenized on-disk format, and a loader that refuses folders that do not match it.

A data set folder holds ``spec.json`` and one integer array per split and modality::

    spec.json                {"modalities": {name: {kind, vocab_size, grid | max_len}},
                              "splits": {split: num_samples}, "generator": {...} (optional)}
    train/rgb.npy            [N, *grid] for images, [N, max_len] for sequences
    val/caption.npy ...

Any folder in this format works (the generated scenes are written the same way), so a
study can point at bring-your-own tokens, e.g. nano4M's CLEVR ``.npy`` files plus a spec.
Token ids of a sequence are ``model.tokenizers``' scheme: 0 is ``[PAD]`` (never masked, never
predicted), 1 is ``[EOS]``; images have no reserved ids. A modality name becomes part of file and
metric names, so it is letters, digits, ``_ . -``.

torch is imported only by the functions that make tensors: checking a folder needs numpy alone.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
RESERVED = ("mean", "total", "default")  # metric and parameter keys beside the modality names
NEEDED_SPLITS = ("train", "val")


class DataFormatError(ValueError):
    """A data folder that does not match its spec; the message names the file and the problem."""


@dataclass(frozen=True)
class ModalitySpec:
    name: str
    kind: str  # "image" or "sequence"
    vocab_size: int
    grid: tuple[int, int] | None = None  # images
    max_len: int | None = None  # sequences

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1] if self.kind == "image" else self.max_len

    @property
    def array_shape(self) -> tuple[int, ...]:
        return tuple(self.grid) if self.kind == "image" else (self.max_len,)


@dataclass
class DatasetSpec:
    modalities: dict[str, ModalitySpec]
    splits: dict[str, int]
    generator: dict | None = None  # how a generated set was made (scene config, seed)

    def save(self, root: Path) -> None:
        d = {
            "modalities": {
                k: {f: v for f, v in asdict(m).items() if f != "name" and v is not None}
                for k, m in self.modalities.items()
            },
            "splits": self.splits,
        }
        if self.generator is not None:
            d["generator"] = self.generator
        (Path(root) / "spec.json").write_text(json.dumps(d, indent=2))

    @classmethod
    def load(cls, root: Path) -> DatasetSpec:
        path = Path(root) / "spec.json"
        if not Path(root).is_dir():
            raise DataFormatError(f"{root}: no such data folder (build one with `ablate data build`)")
        if not path.is_file():
            raise DataFormatError(f"{path}: missing; a data folder needs a spec.json")
        try:
            d = json.loads(path.read_text())
            mods = {}
            for name, m in d["modalities"].items():
                if not NAME.fullmatch(name) or name in RESERVED:
                    raise DataFormatError(
                        f"{path}: modality name {name!r}: a name is letters, digits, _ . - (it names files and "
                        f"metrics), and not one of {', '.join(RESERVED)}")
                kind = m["kind"]
                if kind not in ("image", "sequence"):
                    raise DataFormatError(f"{path}: modality {name!r} has kind {kind!r}; allowed: image, sequence")
                key = "grid" if kind == "image" else "max_len"
                if key not in m:
                    raise DataFormatError(f"{path}: {kind} modality {name!r} needs {key!r}")
                mods[name] = ModalitySpec(
                    name,
                    kind,
                    int(m["vocab_size"]),
                    grid=tuple(int(g) for g in m["grid"]) if kind == "image" else None,
                    max_len=int(m["max_len"]) if kind == "sequence" else None,
                )
            return cls(mods, {k: int(v) for k, v in d["splits"].items()}, d.get("generator"))
        except (KeyError, TypeError, json.JSONDecodeError) as e:
            raise DataFormatError(f"{path}: malformed spec ({type(e).__name__}: {e})") from None


def array_path(root: Path, split: str, modality: str) -> Path:
    return Path(root) / split / f"{modality}.npy"


def checked_arrays(root: Path | str, split: str, modalities: list[str] | None = None) -> dict[str, np.ndarray]:
    """One split's arrays, memory-mapped, each checked against spec.json (present, integer, its shape, ids
    inside its vocabulary, equal sample counts); ``DataFormatError`` names the file and the problem."""
    spec = DatasetSpec.load(root)
    if split not in spec.splits:
        raise DataFormatError(f"{Path(root) / 'spec.json'}: no split {split!r}; splits: {sorted(spec.splits)}")
    wanted = modalities or list(spec.modalities)
    if unknown := [m for m in wanted if m not in spec.modalities]:
        raise DataFormatError(f"{Path(root) / 'spec.json'}: no modality {unknown}; has {sorted(spec.modalities)}")
    arrays = {}
    for name in wanted:
        path = array_path(root, split, name)
        if not path.is_file():
            raise DataFormatError(f"{path}: missing; the spec lists modality {name!r}")
        try:
            arrays[name] = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as e:
            raise DataFormatError(f"{path}: not a .npy array ({e})") from None
    counts = {name: len(a) for name, a in arrays.items()}
    if len(set(counts.values())) > 1:
        raise DataFormatError(f"{Path(root) / split}: unequal sample counts per modality {counts}")
    for name, arr in arrays.items():
        m, path = spec.modalities[name], array_path(root, split, name)
        if not np.issubdtype(arr.dtype, np.integer):
            raise DataFormatError(f"{path}: dtype {arr.dtype}; token arrays must be integers")
        if arr.shape != (spec.splits[split], *m.array_shape):
            raise DataFormatError(
                f"{path}: shape {arr.shape}, expected {(spec.splits[split], *m.array_shape)} "
                f"({spec.splits[split]} samples of {m.kind} {m.array_shape} from spec.json)"
            )
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if lo < 0 or hi >= m.vocab_size:
            raise DataFormatError(f"{path}: token id {lo if lo < 0 else hi} outside the vocabulary [0, {m.vocab_size})")
    return arrays


def load_split(root: Path | str, split: str, modalities: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Load and check one split: modality -> int64 tokens [N, num_tokens] (image grids flattened)."""
    import torch

    return {name: torch.from_numpy(np.array(arr, dtype=np.int64).reshape(len(arr), -1))
            for name, arr in checked_arrays(root, split, modalities).items()}


def verify(root: Path | str) -> DatasetSpec:
    """The spec of a folder whose every split and array was checked (``checked_arrays``), so that training
    and evaluating it cannot fail on its data; remembered while its files are unchanged."""
    root = Path(root)
    files = sorted(root.glob("*/*.npy")) + [root / "spec.json"]
    return _verified(root, tuple((str(f), *_stamp(f)) for f in files))


def _stamp(path: Path) -> tuple[int, int]:
    try:
        stat = path.stat()
    except OSError:
        return -1, -1
    return stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=64)
def _verified(root: Path, stamps: tuple) -> DatasetSpec:
    spec = DatasetSpec.load(root)
    if missing := [s for s in NEEDED_SPLITS if s not in spec.splits]:
        raise DataFormatError(f"{root / 'spec.json'}: no split {missing[0]!r}; a data set needs "
                              f"{' and '.join(NEEDED_SPLITS)} (training, then evaluation)")
    for split in spec.splits:
        checked_arrays(root, split)
    return spec


def batches(
    data: dict[str, torch.Tensor], batch_size: int, generator: torch.Generator, rank: int = 0, world: int = 1
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless shuffled batches; ``world`` processes see disjoint slices of each global batch.

    Yields modality -> int64 [batch_size, num_tokens]. ``generator`` fixes the data order.
    """
    import torch

    n = len(next(iter(data.values())))
    global_batch = batch_size * world
    while True:
        perm = torch.randperm(n, generator=generator)
        for start in range(0, n - global_batch + 1, global_batch):
            idx = perm[start + rank * batch_size : start + (rank + 1) * batch_size]
            yield {k: v[idx] for k, v in data.items()}
