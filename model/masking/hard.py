"""``hard``: adaptive masking that targets the positions the model currently finds hardest.

After Hard Patches Mining (arXiv 2304.05919) and importance-weighted masking: the strategy
keeps a running estimate of the loss at every (modality, position), an exponential moving
average (``decay``) of the mean per-token loss the trainer reports through ``observe``
(positions never observed count as the mean of those observed, or all equal before any).

Per sample, the counts follow the base rule (inputs ``min(input_budget, round((1 - mask_ratio)
* valid))``, targets ``min(target_budget, valid - inputs)``). Of the targets, a
``random_fraction`` are uniform over the valid positions; the others are hard: drawn without
replacement with probability proportional to estimate ** (1 / ``temperature``) (Gumbel
top-k), so different samples get different hard positions instead of one fixed set. The inputs
are then uniform over what is left. ``random_fraction`` defaults to an easy-to-hard curriculum,
1.0 (pure random masking while the estimate is still noise) down to 0.5 by the last step.

The estimate is the strategy's state (``state_dict``), saved with every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from model.batch import DecoderInput, Masks
from model.dataset import ModalitySpec
from model.masking import register
from model.masking.base import MaskingStrategy, param, random_ranks, ranks, split_columns, valid_positions


def _number_in(key: str, value: Any, low: float, high: float, low_open: bool, high_open: bool) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"masking.{key}={value!r}: must be a number in {interval}")


@register("hard")
class HardMasking(MaskingStrategy):
    learns_from_losses = True

    @dataclass
    class Params(MaskingStrategy.Params):
        random_fraction: Any = param({"schedule": "linear", "start": 1.0, "end": 0.5},
                                     "fraction of targets drawn uniformly, in [0, 1] (easy to hard: all at first)")
        decay: Any = param(0.99, "EMA decay of the per-position loss estimate, in [0, 1)")
        temperature: Any = param(1.0, ">= 0.001: hard targets ~ estimate ** (1 / temperature)")

    def __init__(self, specs: dict[str, ModalitySpec], input_budget: int, target_budget: int, **params):
        super().__init__(specs, input_budget, target_budget, **params)
        sizes = torch.tensor([s.num_tokens for s in self.specs.values()])
        self.offsets = sizes.cumsum(0) - sizes  # flat index of (modality i, position 0)
        self.loss_ema = torch.zeros(int(sizes.sum()), dtype=torch.float64)  # [N] over concatenated modalities
        self.seen = torch.zeros(int(sizes.sum()), dtype=torch.bool)

    def configure(self) -> None:
        super().configure()
        _number_in("random_fraction", self.params.random_fraction, 0.0, 1.0, False, False)
        _number_in("decay", self.params.decay, 0.0, 1.0, False, True)
        # From 1e-3 (already a deterministic top-k of the estimate), float32 keys cannot overflow to inf.
        _number_in("temperature", self.params.temperature, 1e-3, float("inf"), False, True)

    def estimate(self) -> torch.Tensor:
        """The current loss estimate per flat position: float64 [N] (> 0)."""
        fallback = self.loss_ema[self.seen].mean() if self.seen.any() else torch.tensor(1.0, dtype=torch.float64)
        return torch.where(self.seen, self.loss_ema, fallback).clamp(min=1e-8)

    def __call__(self, tokens: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, Masks]:
        valid = torch.cat([valid_positions(spec, tokens[n]) for n, spec in self.specs.items()], 1)  # [B, N]
        available = valid.sum(1)
        num_input = self.input_counts(available)
        num_target = (available - num_input).clamp(max=self.target_budget)
        num_random = torch.floor(self.params.random_fraction * num_target.double() + 0.5).long()
        # Gumbel top-k: the k largest of log(weight) + Gumbel noise are a draw without replacement ~ weight.
        # float32 keys are ample for ranking (ties negligible); topk below ranks only what is picked.
        u = torch.rand(valid.shape, generator=generator, device=valid.device)
        gumbel = -torch.log(-torch.log(u.clamp(min=1e-30)))
        key = self.estimate().to(valid.device, torch.float32).log() / self.params.temperature + gumbel
        num_hard = num_target - num_random
        most_hard, most_rest = (int(n.max()) if len(n) else 0 for n in (num_hard, num_random + num_input))
        hard = ranks((-key).masked_fill(~valid, float("inf")), upto=most_hard) < num_hard[:, None]
        rest = random_ranks(valid & ~hard, generator, upto=most_rest)
        target = hard | (rest < num_random[:, None])
        inputs = (rest >= num_random[:, None]) & (rest < (num_random + num_input)[:, None])
        return split_columns(Masks(inputs, target), self.specs)

    def observe(self, dec: DecoderInput, token_loss: torch.Tensor) -> None:
        """Fold one step's per-slot losses float [B, Ld] into the estimate (mean per position, then EMA)."""
        keep = ~dec.pad.cpu()
        flat = (self.offsets[dec.modality.cpu()] + dec.position.cpu())[keep]
        loss = token_loss.detach().cpu().double()[keep]
        sums = torch.zeros_like(self.loss_ema).index_add_(0, flat, loss)
        counts = torch.zeros_like(self.loss_ema).index_add_(0, flat, torch.ones_like(loss))
        observed = counts > 0
        mean = sums / counts.clamp(min=1)
        decay = self.params.decay
        updated = torch.where(self.seen, decay * self.loss_ema + (1 - decay) * mean, mean)
        self.loss_ema = torch.where(observed, updated, self.loss_ema)
        self.seen |= observed

    def state_dict(self) -> dict[str, Any]:
        return {"loss_ema": self.loss_ema.clone(), "seen": self.seen.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"loss_ema", "seen"} or state["loss_ema"].shape != self.loss_ema.shape:
            raise ValueError(f"hard masking state: expected loss_ema and seen of {tuple(self.loss_ema.shape)}")
        self.loss_ema = state["loss_ema"].to(torch.float64).clone()
        self.seen = state["seen"].to(torch.bool).clone()
