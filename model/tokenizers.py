"""Tokenizers fitted on the training split: patch codebooks for images, words for sequences.

Image-like modalities use a codebook learned by k-means over non-overlapping patches (as
iGPT clustered pixel colors). We chose k-means over a VQ-VAE because our scenes are small
and piecewise smooth: k-means fits in seconds on the CPU, is deterministic given its
generator, and already clears the fidelity bars (see ``fidelity.md`` of a built data set).

Sequences (captions, boxes) are word lists; a word-level vocabulary reserves ``[PAD]``,
``[EOS]``, ``[UNK]`` and T5-style sentinels ``[S_0]``... at fixed ids.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

PAD, EOS, UNK = 0, 1, 2
NUM_SENTINELS = 16
SPECIAL_TOKENS = ["[PAD]", "[EOS]", "[UNK]", *(f"[S_{i}]" for i in range(NUM_SENTINELS))]
FIRST_SENTINEL = 3


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """Lloyd's k-means. x: [N, D] float -> centroids [k, D]. Empty clusters are re-seeded."""
    centroids = x[torch.randperm(len(x), generator=generator)[:k]].clone()
    for _ in range(iters):
        assign = nearest(x, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        reseed = x[torch.randint(len(x), (k,), generator=generator)]
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], reseed)
    return centroids


def nearest(x: torch.Tensor, centroids: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
    """Index of the nearest centroid for each row of x: [N, D] -> int64 [N]."""
    c2 = (centroids * centroids).sum(1)
    # ||c||^2 - 2 x.c in place: no temporaries of [chunk, K] (the same numbers as c2 - 2 * (x @ c.T))
    return torch.cat([(part @ centroids.T).mul_(-2).add_(c2).argmin(1) for part in x.split(chunk)])


class PatchCodebook:
    """Non-overlapping ``patch x patch`` tiles mapped to the nearest of K learned tiles.

    encode: images [B, H, W] or [B, H, W, C] -> tokens int64 [B, H/patch, W/patch]
    decode: tokens [B, h, w] -> images of the input's dtype and shape
    """

    kind = "image"

    def __init__(self, patch: int, vocab_size: int, centroids: np.ndarray | None = None):
        self.patch = patch
        self.vocab_size = vocab_size
        self.centroids = None if centroids is None else torch.as_tensor(centroids)

    # Subclasses say how pixels become float features and back.
    def features(self, images: np.ndarray) -> np.ndarray:
        """[B, H, W] -> float32 [B, H, W, C]."""
        return images.astype(np.float32)[..., None]

    def pixels(self, features: np.ndarray) -> np.ndarray:
        """float32 [B, H, W, C] -> native images."""
        return features[..., 0]

    def _to_patches(self, images: np.ndarray) -> torch.Tensor:
        f = self.features(images)
        b, h, w, c = f.shape
        p = self.patch
        f = f.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
        return torch.from_numpy(np.ascontiguousarray(f.reshape(-1, p * p * c)))

    def fit(self, images: np.ndarray, iters: int = 20, sample: int = 150_000, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        x = self._to_patches(images)
        x = x[torch.randperm(len(x), generator=g)[:sample]]
        self.centroids = kmeans(x, self.vocab_size, iters, g)
        return self

    def encode(self, images: np.ndarray) -> np.ndarray:
        b, h, w = images.shape[:3]
        ids = nearest(self._to_patches(images), self.centroids)
        return ids.reshape(b, h // self.patch, w // self.patch).numpy()

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        b, gh, gw = tokens.shape
        p = self.patch
        f = self.centroids[torch.as_tensor(tokens, dtype=torch.long)].numpy()
        f = f.reshape(b, gh, gw, p, p, -1).transpose(0, 1, 3, 2, 4, 5).reshape(b, gh * p, gw * p, -1)
        return self.pixels(f)

    def decode_probs(self, probs: np.ndarray) -> np.ndarray:
        """A distribution over codes per cell, float [B, h, w, K] -> images from the expected patch features.

        The per-pixel expectation: a label map's class is then each pixel's most probable class (not the
        class of the most probable patch, which a spread-out distribution over many partial-object codes
        would leave at background), a depth map the mean depth.
        """
        b, gh, gw, _ = probs.shape
        p = self.patch
        f = (torch.as_tensor(probs, dtype=torch.float32) @ self.centroids.float()).numpy()
        f = f.reshape(b, gh, gw, p, p, -1).transpose(0, 1, 3, 2, 4, 5).reshape(b, gh * p, gw * p, -1)
        return self.pixels(f)

    def save(self, path: Path) -> None:
        np.savez(path, centroids=self.centroids.numpy(), patch=self.patch, **self._extra())

    def _extra(self) -> dict:
        return {}

    @classmethod
    def load(cls, path: Path) -> PatchCodebook:
        z = np.load(path)
        extra = {k: z[k].item() for k in z.files if k not in ("centroids", "patch")}
        centroids = z["centroids"]
        return cls(int(z["patch"]), len(centroids), centroids, **extra)


class RGBCodebook(PatchCodebook):
    """uint8 [B, H, W, 3] images, clustered in [0, 1] color space."""

    def features(self, images):
        return images.astype(np.float32) / 255.0

    def pixels(self, features):
        return np.clip(np.round(features * 255.0), 0, 255).astype(np.uint8)


class DepthCodebook(PatchCodebook):
    """float32 [B, H, W] depth maps."""


class LabelCodebook(PatchCodebook):
    """uint8 [B, H, W] class maps, clustered as one-hot vectors (k-means = Hamming voting)."""

    def __init__(self, patch, vocab_size, centroids=None, num_classes: int = 2):
        super().__init__(patch, vocab_size, centroids)
        self.num_classes = int(num_classes)

    def features(self, images):
        return np.eye(self.num_classes, dtype=np.float32)[images]

    def pixels(self, features):
        return features.argmax(-1).astype(np.uint8)

    def _extra(self):
        return {"num_classes": self.num_classes}


class WordTokenizer:
    """Word lists <-> fixed-length id rows ending in ``[EOS]`` and padded with ``[PAD]``.

    encode: list of B word lists -> int64 [B, max_len]
    decode: [B, L] ids -> list of B word lists (stops at the first ``[EOS]`` or ``[PAD]``)
    """

    kind = "sequence"

    def __init__(self, words: list[str], max_len: int):
        self.tokens = [*SPECIAL_TOKENS, *words]
        self.ids = {t: i for i, t in enumerate(self.tokens)}
        self.max_len = max_len

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def encode(self, texts: list[list[str]]) -> np.ndarray:
        out = np.full((len(texts), self.max_len), PAD, dtype=np.int64)
        for i, words in enumerate(texts):
            ids = [self.ids.get(w, UNK) for w in words][: self.max_len - 1] + [EOS]
            out[i, : len(ids)] = ids
        return out

    def decode(self, tokens: np.ndarray) -> list[list[str]]:
        out = []
        for row in np.asarray(tokens).tolist():
            words = []
            for t in row:
                if t in (PAD, EOS):
                    break
                words.append(self.tokens[t] if 0 <= t < len(self.tokens) else "[UNK]")
            out.append(words)
        return out

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({"words": self.tokens[len(SPECIAL_TOKENS) :], "max_len": self.max_len}))

    @classmethod
    def load(cls, path: Path) -> WordTokenizer:
        d = json.loads(Path(path).read_text())
        return cls(d["words"], d["max_len"])
