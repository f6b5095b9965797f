"""``random``: BERT/MAE-style masking, uniform over all valid tokens of all modalities.

Per sample, exactly ``min(input_budget, valid)`` input tokens (with ``mask_ratio``:
``min(input_budget, round((1 - ratio) * valid))``) and then ``min(target_budget, valid - inputs)``
target tokens, drawn without replacement from the concatenation of all modalities, so a
modality's share follows its token count. The ``sparse`` and ``dense`` presets
(``model/conf/masking/``) are this family with a low and a high ``mask_ratio``.
"""

from __future__ import annotations

import torch

from model.batch import Masks
from model.masking import register
from model.masking.base import MaskingStrategy, random_ranks, select, split_columns, valid_positions


@register("random")
class RandomMasking(MaskingStrategy):
    def __call__(self, tokens: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, Masks]:
        valid = torch.cat([valid_positions(spec, tokens[n]) for n, spec in self.specs.items()], dim=1)  # [B, N]
        available = valid.sum(1)
        num_input = self.input_counts(available)
        num_target = (available - num_input).clamp(max=self.target_budget)
        return split_columns(select(random_ranks(valid, generator), num_input, num_target), self.specs)
