"""``stripes``: whole rows or columns of image grids hidden, random tokens of sequences.

Per sample, the tokens hidden from the encoder (as in ``block``: everything the input budget or
``mask_ratio`` leaves out) are split over modalities in proportion to their valid token counts
(largest remainder). On an image grid the hidden cells are whole lines, rows or columns (``axis``;
``both``: each sample and modality picks one of the two at random), in random order: ``k`` cells
hide ``k // line`` whole lines and the first ``k % line`` cells of one more. A sequence hides
uniformly random tokens. Everything not hidden is input; targets are a uniformly random subset of
the hidden tokens up to ``target_budget``.

Where ``block``'s rectangles leave a line's neighbours visible on both sides, a hidden row leaves
only the rows above and below: a harder, long-range in-painting task along one axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model.masking import register
from model.masking.base import HidingStrategy, param, proportional, random_ranks

AXES = ("rows", "columns", "both")


def hide_lines(grid: tuple[int, int], counts: torch.Tensor, by_rows: torch.Tensor,
               generator: torch.Generator) -> torch.Tensor:
    """Exactly ``counts`` hidden cells per sample, as whole lines in random order (the last one partial).

    grid: (h, w); counts: int64 [B], at most h * w; by_rows: bool [B] (rows, else columns)
    -> hidden bool [B, h * w], row-major.
    """
    h, w = grid
    cell = torch.arange(h * w, device=counts.device)
    row, col = cell // w, cell % w
    lines = torch.where(by_rows, h, w)  # [B]
    line_rank = random_ranks(torch.arange(max(h, w), device=counts.device) < lines[:, None], generator)  # [B, max]
    line = torch.where(by_rows[:, None], row, col)  # [B, h * w]: the line a cell lies on
    along = torch.where(by_rows[:, None], col, row)  # its place along that line
    order = line_rank.gather(1, line) * torch.where(by_rows, w, h)[:, None] + along  # a permutation of cells
    return order < counts[:, None]


@register("stripes")
class StripesMasking(HidingStrategy):
    @dataclass
    class Params(HidingStrategy.Params):
        axis: str = param("rows", "rows, columns or both (each sample and image modality picks one at random)")

    def configure(self) -> None:
        super().configure()
        if self.params.axis not in AXES:
            raise ValueError(f"masking.axis={self.params.axis!r}: must be one of {', '.join(AXES)}")

    def hide(self, tokens: dict[str, torch.Tensor], valid: list[torch.Tensor], available: torch.Tensor,
             num_hidden: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
        share = proportional(num_hidden, available, generator)  # hidden per modality
        hidden = []
        for i, (spec, v) in enumerate(zip(self.specs.values(), valid)):
            if spec.kind == "image":
                hidden.append(hide_lines(spec.grid, share[:, i], self._by_rows(len(v), v.device, generator),
                                         generator))
            else:
                hidden.append(random_ranks(v, generator) < share[:, i, None])
        return hidden

    def _by_rows(self, b: int, device: torch.device, generator: torch.Generator) -> torch.Tensor:
        """bool [B]: which samples hide rows (the others columns)."""
        if self.params.axis == "both":
            return torch.rand(b, generator=generator, device=device) < 0.5
        return torch.full((b,), self.params.axis == "rows", device=device)
