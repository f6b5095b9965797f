"""``block``: structured masking, rectangles on image grids (BEiT) and T5 spans on sequences.

Per sample, the tokens hidden from the encoder (``valid - min(input_budget, round((1 -
mask_ratio) * valid))``; without a ratio, everything the input budget leaves out) are split
over modalities in proportion to their valid token counts (largest remainder), then:

- image modality: BEiT's blockwise masking (arXiv 2106.08254, ``masking_generator.py``):
  rectangles of random area (uniform in [1, still to hide]) and aspect ratio (log-uniform in
  [``min_aspect``, 1 / ``min_aspect``]) at random places, each kept only if the union stays
  within the count. ``DRAWS`` candidates per sample are drawn for the whole batch at once;
  what they leave short (a few cells, see the tests) is hidden at random single cells;
- sequence modality: ``round(hidden / mean_span)`` contiguous spans (T5's noise with mean span
  length ``mean_span``), uniformly placed (``model/masking/spans.py``).

Everything not hidden is input; targets are a uniformly random subset of the hidden tokens up
to ``target_budget`` (MAE: the decoder predicts some of the masked tokens).

``sequence_format: t5`` makes sequences use T5's sentinel format (``spans.to_t5``, applied by
the trainer after masking). Each span then costs one extra slot in the input (its sentinel)
and one in the target, and a sequence's input (visible tokens + sentinels) and target (all its
spans with their sentinels) are each taken whole or not at all: sequences are served first,
in name order, while they fit the budgets; image inputs and targets fill what is left (image
inputs beyond it are dropped at random). A fully hidden sequence has no input at all (no lone
sentinel). Sequences hide at most ``max_len - spans`` tokens, so a target fits its positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from model.batch import Masks
from model.masking import register
from model.masking.base import HidingStrategy, param, proportional, random_ranks, split_columns, targets_from_hidden
from model.masking.spans import random_spans, span_counts

DRAWS = 16  # candidate rectangles per sample and image modality
FORMATS = ("positions", "t5")


def rectangles(
    grid: tuple[int, int], counts: torch.Tensor, min_aspect: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BEiT's blockwise masking on an (h, w) grid, vectorized over the batch (a loop over ``DRAWS`` only).

    counts: int64 [B], cells to hide -> (hidden bool [B, h * w] row-major, the union of the
    accepted blocks, at most ``counts``; blocks int64 [B, DRAWS, 4] as (top, left, height, width);
    accepted bool [B, DRAWS]).
    """
    h, w = grid
    b, device = counts.shape[0], counts.device
    rows = torch.arange(h, device=device)[None, :, None]
    cols = torch.arange(w, device=device)[None, None, :]
    hidden = torch.zeros(b, h, w, dtype=torch.bool, device=device)
    log_aspect = math.log(min_aspect)
    blocks, accepted = [], []
    for _ in range(DRAWS):
        remaining = counts - hidden.sum((1, 2))
        u = torch.rand(b, 4, generator=generator, device=device, dtype=torch.float64)
        area = 1 + torch.floor(u[:, 0] * remaining.clamp(min=1))
        aspect = torch.exp(log_aspect * (1 - 2 * u[:, 1]))
        height = torch.round(torch.sqrt(area * aspect)).long().clamp(1, h)
        width = torch.round(torch.sqrt(area / aspect)).long().clamp(1, w)
        top = torch.floor(u[:, 2] * (h - height + 1)).long()
        left = torch.floor(u[:, 3] * (w - width + 1)).long()
        box = [v[:, None, None] for v in (top, left, height, width)]
        grown = hidden | ((rows >= box[0]) & (rows < box[0] + box[2]) & (cols >= box[1]) & (cols < box[1] + box[3]))
        ok = (remaining > 0) & (grown.sum((1, 2)) <= counts)
        hidden = torch.where(ok[:, None, None], grown, hidden)
        blocks.append(torch.stack([top, left, height, width], 1))
        accepted.append(ok)
    return hidden.flatten(1), torch.stack(blocks, 1), torch.stack(accepted, 1)


def check_min_aspect(value: Any) -> None:
    """``masking.min_aspect``: rectangles' aspect ratios lie in [min_aspect, 1 / min_aspect], so a number in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"masking.min_aspect={value!r}: must be a number in (0, 1]")


def hide_cells(
    grid: tuple[int, int], counts: torch.Tensor, min_aspect: float | None, generator: torch.Generator
) -> torch.Tensor:
    """Exactly ``counts`` (int64 [B]) hidden cells per row -> bool [B, h * w]: rectangles topped up with
    random cells, or only random cells if ``min_aspect`` is None."""
    hidden = torch.zeros(counts.shape[0], grid[0] * grid[1], dtype=torch.bool, device=counts.device)
    if min_aspect is not None:
        hidden = rectangles(grid, counts, min_aspect, generator)[0]
    return hidden | (random_ranks(~hidden, generator) < (counts - hidden.sum(1))[:, None])


@register("block")
class BlockMasking(HidingStrategy):
    @dataclass
    class Params(HidingStrategy.Params):
        mean_span: Any = param(3.0, "sequences: mean span length (T5), >= 1")
        min_aspect: Any = param(0.3, "images: block aspect ratios lie in [min_aspect, 1 / min_aspect], in (0, 1]")
        sequence_format: str = param("positions", "positions or t5 (one sentinel per span; the trainer applies "
                                     "spans.to_t5)")

    @property
    def sequence_format(self) -> str:
        return self.params.sequence_format

    def configure(self) -> None:
        super().configure()
        p = self.params
        if isinstance(p.mean_span, bool) or not isinstance(p.mean_span, (int, float)) or not p.mean_span >= 1:
            raise ValueError(f"masking.mean_span={p.mean_span!r}: must be a number >= 1")
        check_min_aspect(p.min_aspect)
        if p.sequence_format not in FORMATS:
            raise ValueError(f"masking.sequence_format={p.sequence_format!r}: must be one of {', '.join(FORMATS)}")

    def hide(self, tokens: dict[str, torch.Tensor], valid: list[torch.Tensor], available: torch.Tensor,
             num_hidden: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
        share = proportional(num_hidden, available, generator)
        t5 = self.params.sequence_format == "t5"
        hidden = self._image_blocks(share, generator)
        for i, spec in enumerate(self.specs.values()):
            if spec.kind == "image":
                continue
            count = share[:, i].clamp(max=spec.max_len - 1) if t5 else share[:, i]
            spans = span_counts(count, available[:, i], self.params.mean_span)
            if t5:  # hidden tokens + one sentinel per span must fit in max_len
                count = count.minimum(spec.max_len - spans)
                spans = spans.minimum(count)
            hidden[i] = random_spans(available[:, i], count, spans, spec.max_len, generator)
        return hidden

    def masks_from_hidden(self, valid: list[torch.Tensor], hidden: list[torch.Tensor],
                          generator: torch.Generator) -> dict[str, Masks]:
        if self.params.sequence_format == "t5":
            return self._t5_budgets(valid, hidden, generator)
        return super().masks_from_hidden(valid, hidden, generator)

    def _image_blocks(self, share: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor | None]:
        """Rectangles for every image modality: int64 share [B, M] -> per modality bool [B, N_m] (None for sequences).

        Modalities on the same grid are drawn in one call over a [k * B] batch: the per-draw cost is
        mostly fixed overhead at these sizes, so this is about k times faster than one call each.
        """
        hidden: list[torch.Tensor | None] = [None] * len(self.specs)
        by_grid: dict[tuple[int, int], list[int]] = {}
        for i, spec in enumerate(self.specs.values()):
            if spec.kind == "image":
                by_grid.setdefault(spec.grid, []).append(i)
        for grid, columns in by_grid.items():
            counts = share[:, columns].T.reshape(-1)  # [k * B], modality-major
            cells = hide_cells(grid, counts, self.params.min_aspect, generator)
            for i, part in zip(columns, cells.chunk(len(columns))):
                hidden[i] = part
        return hidden

    def _t5_budgets(
        self, valid: list[torch.Tensor], hidden: list[torch.Tensor], generator: torch.Generator
    ) -> dict[str, Masks]:
        """Sequences whole (with a slot per sentinel) while they fit, in name order; images fill the rest."""
        b = hidden[0].shape[0]
        room_input = torch.full((b,), self.input_budget, device=hidden[0].device)
        room_target = torch.full((b,), self.target_budget, device=hidden[0].device)
        out = {}
        for name, spec, v, h in zip(self.specs, self.specs.values(), valid, hidden):
            if spec.kind != "sequence":
                continue
            spans = (h & ~F.pad(h[:, :-1], (1, 0), value=False)).sum(1)
            visible = v & ~h
            cost_input = torch.where(visible.any(1), visible.sum(1) + spans, 0)
            cost_target = h.sum(1) + spans
            fits_input, fits_target = cost_input <= room_input, cost_target <= room_target
            room_input -= torch.where(fits_input, cost_input, 0)
            room_target -= torch.where(fits_target, cost_target, 0)
            out[name] = Masks(visible & fits_input[:, None], h & fits_target[:, None])
        images = [(n, v, h) for (n, spec), v, h in zip(self.specs.items(), valid, hidden) if spec.kind == "image"]
        if images:
            names, v, h = zip(*images)
            hidden_all = torch.cat(h, 1)
            visible = torch.cat(v, 1) & ~hidden_all
            inputs = random_ranks(visible, generator) < visible.sum(1).minimum(room_input)[:, None]
            targets = targets_from_hidden(hidden_all, room_target, generator)
            out.update(split_columns(Masks(inputs, targets), {n: self.specs[n] for n in names}))
        return {n: out[n] for n in self.specs}
