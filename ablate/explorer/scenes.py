"""The page's input scene, from one of four sources, as tokens (and ground truth where there is one).

- ``heldout``: scene ``index`` of the validation split, its tokens as stored.
- ``seed``: a new scene rendered from ``(seed, "test", 0)`` and tokenized with the fitted tokenizers.
- ``caption``: typed words, tokenized; the scene has a caption and nothing else.
- ``upload``: an image of the user's (``uploads.py``), tokenized with the fitted rgb tokenizer; rgb only.

``with_caption`` puts typed words in place of an image scene's caption: a combined caption + image query.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.build import load_tokenizers, scene_config
from model.dataset import DatasetSpec, load_split
from model.modalities import MODALITIES
from model.scenes import SceneConfig, render
from model.tasks import Truth


class SceneError(ValueError):
    """A scene that cannot be made; the message says why and what is allowed."""


@dataclass
class Scene:
    label: str
    tokens: dict[str, torch.Tensor]  # modality -> int64 [1, N_m], for the modalities the scene has
    truth: dict[str, Any]  # modality -> native value of this one scene (image array or word list)
    scored: Truth | None = None  # what predictions are scored against (as the evaluation does); None: no truth
    upload: np.ndarray | None = None  # an uploaded image as it was tokenized: uint8 [canvas, canvas, 3]


class SceneSource:
    """Makes scenes of a generated data set (tokenizers and scene config are needed to decode and render)."""

    def __init__(self, data_root: str | Path):
        spec = DatasetSpec.load(data_root)
        if spec.generator is None:
            raise SceneError(f"{data_root}: the explorer needs a generated data set (`ablate data build`): "
                             "bring-your-own tokens have no tokenizers to draw them with")
        self.spec = spec
        self.cfg: SceneConfig = scene_config(spec)
        self.data_seed: int = spec.generator["seed"]
        self.tokenizers = load_tokenizers(data_root)
        self.val = load_split(data_root, "val")
        self.caption_words = self.tokenizers["caption"].tokens if "caption" in spec.modalities else []

    @property
    def num_heldout(self) -> int:
        return self.spec.splits["val"]

    def heldout(self, index: int) -> Scene:
        if not 0 <= index < self.num_heldout:
            raise SceneError(f"scene.index={index}: the validation split has scenes 0..{self.num_heldout - 1}")
        tokens = {n: t[index : index + 1].long() for n, t in self.val.items()}
        return self._rendered(f"held-out scene {index}", self.data_seed, "val", index, tokens)

    def from_seed(self, seed: int) -> Scene:
        return self._rendered(f"new scene from seed {seed}", seed, "test", 0)

    def from_caption(self, text: str) -> Scene:
        if "caption" not in self.spec.modalities:
            raise SceneError("scene.caption: this data set has no caption modality")
        tokenizer = self.tokenizers["caption"]
        words = text.lower().replace(".", " . ").split()
        if not words:
            raise SceneError("scene.caption: empty; type a few words, e.g. 'large red circle and small blue square'")
        if unknown := sorted({w for w in words if w not in tokenizer.ids or w.startswith("[")}):
            known = [w for w in tokenizer.tokens if not w.startswith("[")]
            raise SceneError(f"scene.caption: unknown words {unknown}; the caption vocabulary is {known}")
        if len(words) >= tokenizer.max_len:
            raise SceneError(f"scene.caption: {len(words)} words; at most {tokenizer.max_len - 1}")
        return Scene("typed caption", {"caption": self._tokenize("caption", words)}, {"caption": words})

    def from_image(self, label: str, rgb: np.ndarray) -> Scene:
        """An image of the canvas's size, uint8 [canvas, canvas, 3], tokenized: a scene of rgb alone."""
        return Scene(label, {"rgb": self._tokenize("rgb", rgb)}, {}, upload=rgb)

    def with_caption(self, scene: Scene, text: str) -> Scene:
        """``scene`` with the typed words as its caption (its other modalities and their truth as they are)."""
        typed = self.from_caption(text)
        truth = {m: v for m, v in scene.truth.items() if m != "caption"}
        return replace(scene, label=f"{scene.label} + typed caption", tokens={**scene.tokens, **typed.tokens},
                       truth=truth)

    def _rendered(self, label: str, seed: int, split: str, index: int,
                  tokens: dict[str, torch.Tensor] | None = None) -> Scene:
        """A generated scene with its ground truth; tokenized with the fitted tokenizers unless ``tokens``."""
        scored = Truth(self.cfg, render(self.cfg, seed, split, np.array([index])))
        truth = {n: MODALITIES[n].truth(self.cfg, scored.scenes)[0] for n in self.spec.modalities}
        if tokens is None:
            tokens = {name: self._tokenize(name, value) for name, value in truth.items()}
        return Scene(label, tokens, truth, scored)

    def _tokenize(self, name: str, value: Any) -> torch.Tensor:
        """One scene's native value of modality ``name`` (image array or word list) as int64 [1, N_m], by the
        fitted tokenizer."""
        batch = value[None] if isinstance(value, np.ndarray) else [value]
        return torch.from_numpy(self.tokenizers[name].encode(batch)).long().reshape(1, -1)
