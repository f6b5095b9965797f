"""``aligned``: cross-modal masking, the same grid cells hidden in every aligned image modality.

With independent masks, a hidden rgb cell is often visible in depth or semseg at the same
place, and the model can copy across modalities instead of understanding the scene. Here,
per sample, one set of cells of the shared grid is hidden in all ``modalities`` at once
(default: every image modality; they must share a grid shape).

Counts follow the base rule (``valid - min(input_budget, round((1 - mask_ratio) * valid))``
tokens hidden): the aligned cells take their proportional part (a hidden cell costs one token
per aligned modality), the other modalities share the rest in proportion to their sizes. The
cells are uniform at random (``region: random``) or BEiT rectangles (``region: blocks``, as in
``block``, with ``min_aspect``). Everything not hidden is input; targets are a uniformly random
subset of the hidden tokens up to ``target_budget``.

``hide_objects: true`` also hides the caption words and boxes of every object whose box is
mostly under the hidden cells (at least ``object_cover`` of its grid cells). Which tokens
belong to which object is read off the tokens themselves, following the generated data set
(``model/modalities.py``, ``model/scenes.py``):

- ``boxes`` lists objects left to right, 5 tokens each: a class, then x0, y0, x1, y1 as
  coordinate bins, the last ``coordinate_bins`` ids of its vocabulary (pixel 0..canvas-1, so
  ``coordinate_bins`` is the canvas size, 32 by default); bin v covers grid column
  ``v * grid_w // coordinate_bins`` (rows alike). The number of objects is its length / 5.
- ``caption`` names the same objects in the same order, 3 words each joined by ``and`` (object
  k at words 4k..4k+2), then with two or more objects a relation
  ``. the C0 S0 is above|below the C1 S1`` naming objects 0 and 1 again (color and shape at
  words 4n+1, 4n+2 and 4n+6, 4n+7 for n objects): those are hidden with their object.
  The separators (``and``, ``.``, ``the``, ...) stay visible.

These hidden tokens come first within their modality's share (more are hidden if the share is
larger; the share is exceeded, and the input shrinks, if it is smaller). Tokens that do not
follow this layout raise ``ValueError`` rather than hide the wrong words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from model.masking import register
from model.masking.base import HidingStrategy, param, proportional, random_ranks
from model.masking.block import check_min_aspect, hide_cells
from model.tokenizers import PAD

REGIONS = ("random", "blocks")
BOX_TOKENS, CAPTION_WORDS = 5, 4  # per object: class + 4 bins; 3 words + "and"


@register("aligned")
class AlignedMasking(HidingStrategy):
    @dataclass
    class Params(HidingStrategy.Params):
        modalities: Any = param(None, "the image modalities hidden together (one grid); null: every image modality")
        region: str = param("random", "random (cells) or blocks (BEiT rectangles)")
        min_aspect: Any = param(0.3, "region=blocks: aspect ratios lie in [min_aspect, 1 / min_aspect], in (0, 1]",
                                preset=False)
        hide_objects: bool = param(False, "also hide the caption words and boxes of objects under hidden cells")
        object_cover: Any = param(0.5, "hidden fraction of an object's box cells that hides the object, in (0, 1]")
        coordinate_bins: int = param(32, "boxes: coordinate-bin ids are the last this many of its vocabulary",
                                     preset=False)

    def configure(self) -> None:
        super().configure()
        p = self.params
        images = [n for n, s in self.specs.items() if s.kind == "image"]
        group = images if p.modalities is None else p.modalities
        if isinstance(group, str) or not isinstance(group, (list, tuple)) or not group:
            raise ValueError(f"masking.modalities={group!r}: must be null or a non-empty list of {images}")
        if unknown := [n for n in group if n not in images]:
            raise ValueError(f"masking.modalities: {unknown} are not image modalities; allowed: {images}")
        if len({self.specs[n].grid for n in group}) > 1:
            grids = {n: self.specs[n].grid for n in group}
            raise ValueError(f"masking.modalities: aligned modalities need one grid shape; got {grids}")
        self.group = sorted(set(group))
        self.grid = self.specs[self.group[0]].grid
        if p.region not in REGIONS:
            raise ValueError(f"masking.region={p.region!r}: must be one of {', '.join(REGIONS)}")
        check_min_aspect(p.min_aspect)
        if not isinstance(p.hide_objects, bool):
            raise ValueError(f"masking.hide_objects={p.hide_objects!r}: must be true or false")
        cover = p.object_cover
        if isinstance(cover, bool) or not isinstance(cover, (int, float)) or not 0 < cover <= 1:
            raise ValueError(f"masking.object_cover={cover!r}: must be a number in (0, 1]")
        bins = p.coordinate_bins
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise ValueError(f"masking.coordinate_bins={bins!r}: must be an integer >= 1")
        if p.hide_objects:
            if self.specs.get("boxes") is None or self.specs["boxes"].kind != "sequence":
                raise ValueError("masking.hide_objects=true needs a sequence modality 'boxes' (objects come from it)")
            if bins >= self.specs["boxes"].vocab_size:
                raise ValueError(f"masking.coordinate_bins={bins}: must be below the boxes vocabulary size")
            if "caption" in self.specs and self.specs["caption"].kind != "sequence":
                raise ValueError("masking.hide_objects=true: 'caption' must be a sequence modality")

    def hide(self, tokens: dict[str, torch.Tensor], valid: list[torch.Tensor], available: torch.Tensor,
             num_hidden: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
        p = self.params
        names = list(self.specs)
        total = available.sum(1)
        aligned = torch.tensor([n in self.group for n in names], device=total.device)
        cells, size = self.grid[0] * self.grid[1], len(self.group)
        others = available.masked_fill(aligned, 0)
        # Aligned cells take their proportional part, as far as whole cells (one token per modality) allow.
        share = torch.floor(num_hidden.double() * cells / total.clamp(min=1) + 0.5).long()
        share = share.minimum(num_hidden // size).maximum(-((others.sum(1) - num_hidden) // size)).clamp(0, cells)
        region = hide_cells(self.grid, share, p.min_aspect if p.region == "blocks" else None, generator)
        shares = proportional((num_hidden - size * share).clamp(min=0), others, generator)
        forced = self._object_tokens(tokens, region) if p.hide_objects else {}

        hidden = []
        for i, (name, spec) in enumerate(self.specs.items()):
            if name in self.group:
                hidden.append(region)
            elif spec.kind == "image":
                hidden.append(hide_cells(spec.grid, shares[:, i], p.min_aspect if p.region == "blocks" else None,
                                         generator))
            else:
                first = forced.get(name)
                count = shares[:, i] if first is None else shares[:, i].maximum(first.sum(1))
                hidden.append(random_ranks(valid[i], generator, first) < count[:, None])
        return hidden

    def _object_tokens(self, tokens: dict[str, torch.Tensor], region: torch.Tensor) -> dict[str, torch.Tensor]:
        """The boxes (and caption) tokens of objects mostly under the hidden cells: modality -> bool [B, L]."""
        boxes = tokens["boxes"]
        b, length = boxes.shape
        spec, bins = self.specs["boxes"], self.params.coordinate_bins
        count = (boxes != PAD).sum(1) - 1  # without EOS
        objects = count // BOX_TOKENS  # [B]
        slots = length // BOX_TOKENS
        position = torch.arange(length, device=boxes.device)
        in_object = position[None] < (objects * BOX_TOKENS)[:, None]
        is_bin = boxes >= spec.vocab_size - bins
        if (count % BOX_TOKENS).any() or (in_object & (is_bin != (position % BOX_TOKENS != 0))).any():
            raise ValueError(
                f"masking.hide_objects: boxes tokens are not groups of a class and {BOX_TOKENS - 1} coordinate bins "
                f"(the last masking.coordinate_bins={bins} ids of its vocabulary)"
            )
        # Box corners in grid cells: [B, slots] each (absent objects give an empty box at 0).
        coords = (boxes[:, : slots * BOX_TOKENS] - (spec.vocab_size - bins)).clamp(min=0)
        x0, y0, x1, y1 = coords.view(b, slots, BOX_TOKENS)[..., 1:].unbind(-1)
        gh, gw = self.grid
        c0, c1, r0, r1 = x0 * gw // bins, x1 * gw // bins, y0 * gh // bins, y1 * gh // bins
        # Hidden cells inside each box from a summed-area table.
        table = F.pad(region.view(b, gh, gw).long().cumsum(1).cumsum(2), (1, 0, 1, 0))

        def at(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            return table.view(b, -1).gather(1, r * (gw + 1) + c)

        under = at(r1 + 1, c1 + 1) - at(r0, c1 + 1) - at(r1 + 1, c0) + at(r0, c0)
        area = (r1 - r0 + 1) * (c1 - c0 + 1)
        present = torch.arange(slots, device=boxes.device) < objects[:, None]
        gone = (under >= self.params.object_cover * area) & present
        out = {"boxes": in_object & gone.gather(1, (position // BOX_TOKENS).clamp(max=slots - 1).expand(b, -1))}
        if "caption" in self.specs:
            out["caption"] = self._caption_tokens(tokens["caption"], objects, gone)
        return out

    @staticmethod
    def _caption_tokens(caption: torch.Tensor, objects: torch.Tensor, gone: torch.Tensor) -> torch.Tensor:
        """Caption words naming hidden objects: int64 caption [B, L], objects [B], gone bool [B, K] -> bool [B, L]."""
        n = objects[:, None]
        expected = CAPTION_WORDS * objects - 1 + torch.where(objects >= 2, 9, 0) + 1  # words + relation + EOS
        if ((caption != PAD).sum(1) != expected).any():
            raise ValueError(
                "masking.hide_objects: caption lengths do not match the generated grammar (3 words per object "
                "joined by 'and', a 9-word relation for 2+ objects, EOS) for the object counts in boxes"
            )
        p = torch.arange(caption.shape[1], device=caption.device)[None]
        owner = torch.where((p < CAPTION_WORDS * n - 1) & (p % CAPTION_WORDS != CAPTION_WORDS - 1),
                            p // CAPTION_WORDS, -1)
        relation = p - CAPTION_WORDS * n  # word index after the object list's last word + 1
        owner = torch.where((n >= 2) & ((relation == 1) | (relation == 2)), 0, owner)
        owner = torch.where((n >= 2) & ((relation == 6) | (relation == 7)), 1, owner)
        return (owner >= 0) & gone.gather(1, owner.clamp(min=0, max=gone.shape[1] - 1))
