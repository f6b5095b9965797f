"""``dirichlet``: 4M's multimodal masking (arXiv 2312.06647, ``fourm/data/masking.py``), vectorized.

Per sample:
1. pick a mixture component (``weights``, uniform by default); it drives the input alphas,
   the target alphas and the sequence keep-schemes together;
2. draw the input total uniformly from [``input_budget_min``, ``input_budget``] (inclusive),
   lowered to ``round((1 - mask_ratio) * valid)`` when a ``mask_ratio`` is given;
3. split it over modalities by p ~ Dir(alpha_in): floor(p * total), then hand the leftover out
   one token at a time to the argmax of a fresh Dirichlet draw, so a modality with alpha 0
   (clamped to 1e-9) practically never gets a token;
4. clamp each share to the modality's valid (non-PAD) token count; the excess is dropped,
   not redistributed, so the realized total can fall below the drawn one;
5. the same for targets with alpha_out, each modality capped at its valid count minus its
   input share, so inputs and targets are disjoint;
6. within a modality, the chosen positions are uniformly random (argsort over noise).

Alphas are keyed by modality name (a number means the same alpha for all; a ``default`` key,
the alpha of every modality not named, see ``model/fit_to_data.py``), never by list position: 4M maps a
YAML list onto sorted modality names, which silently breaks when a modality is added. A mixture
is a list of such values; ``input_alphas``, ``target_alphas`` and ``keep`` given as lists must
have equal length, a single value applies to every component.

Sequence keep-schemes (``keep: {caption: all}``), 4M's ``keep_scheme`` at position level (span
masking with sentinels is the ``block`` family):
- ``random`` (default): the Dirichlet shares decide, like any modality;
- ``all``: if the modality gets any input share, its whole sequence is input and none of it
  is a target; the extra tokens come only from budget the clamps left unused, so the input
  budget still holds (4M likewise lowers the keep probability until the sequence fits);
- ``none``: never input (its input share is dropped); it can still be a target.
Unlike 4M's span-masked sequences, our sequence targets are positions, so their target cap
is also the valid count minus the input share (inputs and targets stay disjoint).

Dirichlet draws are normalized Gamma variates. ``torch.distributions`` cannot take a
generator, so Gamma variates are drawn here with Marsaglia-Tsang (2000) from ``torch.randn``
and ``torch.rand`` on the passed generator only: shape alpha + 1 (always >= 1, where the
method is exact), boosted back to alpha by U^(1/alpha). The boost is done in log space and
normalized with a softmax, so alpha = 1e-9 neither underflows to 0/0 nor produces NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from model.batch import Masks
from model.fit_to_data import spread
from model.masking import register
from model.masking.base import MaskingStrategy, param, random_ranks, select, valid_positions

EPS = 1e-9  # 4M's clamp for alpha = 0
KEEP_SCHEMES = ("random", "all", "none")
RANDOM, ALL, NONE = range(3)


def log_gamma(alpha: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """log of independent Gamma(alpha, 1) variates: float64 alpha [...] > 0 -> float64 [...].

    Marsaglia-Tsang on shape alpha + 1, vectorized: every round redraws all entries and keeps
    the first acceptance of each (acceptance >= 95% per round, so a few rounds in total).
    """
    d = alpha + (1.0 - 1.0 / 3.0)
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.zeros_like(d)
    todo = torch.ones_like(d, dtype=torch.bool)
    while todo.any():
        x = torch.randn(d.shape, generator=generator, dtype=d.dtype, device=d.device)
        u = torch.rand(d.shape, generator=generator, dtype=d.dtype, device=d.device)
        v = (1.0 + c * x) ** 3
        # v <= 0 makes log(v) NaN and the comparison False: rejected, as the method requires.
        accept = todo & (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * torch.log(v))
        out = torch.where(accept, torch.log(d * v), out)
        todo &= ~accept
    u = 1.0 - torch.rand(d.shape, generator=generator, dtype=d.dtype, device=d.device)  # (0, 1]: log stays finite
    return out + torch.log(u) / alpha


def dirichlet(alpha: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Dir(alpha) draws over the last dim: float64 alpha [..., M] -> probabilities [..., M]."""
    return torch.softmax(log_gamma(alpha, generator), dim=-1)


def split_budget(total: torch.Tensor, alpha: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """4M's token budget split: int64 total [B], float64 alpha [B, M] -> int64 shares [B, M] summing to total."""
    m = alpha.shape[1]
    share = (dirichlet(alpha, generator) * total[:, None]).floor().long()
    leftover = total - share.sum(1)  # in [0, M): each floor loses less than one token
    winners = dirichlet(alpha[:, None, :].expand(-1, m, -1), generator).argmax(-1)  # [B, M draws]
    handed = torch.arange(m, device=total.device) < leftover[:, None]  # the first `leftover` draws count
    return share + (F.one_hot(winners, m) * handed[..., None]).sum(1)


@register("dirichlet")
class DirichletMasking(MaskingStrategy):
    @dataclass
    class Params(MaskingStrategy.Params):
        # Sparse alphas make most samples draw their inputs and targets from one or two modalities, so training
        # sees the any-to-one tasks the evaluation asks for (ahead of 1.0 on every rgb -> X metric in the
        # 1,800-step nano run of benchmarks/RESULTS.md).
        input_alphas: Any = param({"default": 0.2}, "Dirichlet concentrations of the input shares: a number, "
                                  "{modality: number} (`default`: every modality not named; 0: never), or a list "
                                  "of those (a mixture)")
        target_alphas: Any = param({"default": 0.2}, "the same, for the target shares")
        keep: Any = param(None, "null, or {sequence modality: random, all or none} (or a list, per component): "
                          "`all` gives the whole sequence as input when it gets any, `none` never", preset=False)
        weights: Any = param(None, "null (uniform), or one weight >= 0 per mixture component", preset=False)
        input_budget_min: int | None = param(None, "null (= input_budget), or the least input total a sample "
                                             "draws (uniform in [min, input_budget])", preset=False)
        target_budget_min: int | None = param(None, "the same, for the target total", preset=False)

    def configure(self) -> None:
        super().configure()
        p = self.params
        mixture = {k: v for k in ("input_alphas", "target_alphas", "keep") if _is_list(v := getattr(p, k))}
        for key, value in mixture.items():
            if not value:
                raise ValueError(f"masking.{key}=[]: a mixture needs at least one component")
        if len({len(v) for v in mixture.values()}) > 1:
            lengths = ", ".join(f"masking.{k} has {len(v)}" for k, v in mixture.items())
            raise ValueError(f"mixture lists must have equal length: {lengths}")
        k = len(next(iter(mixture.values()))) if mixture else 1
        self.input_alphas = torch.tensor(
            [self._alphas(where, v) for where, v in _components("input_alphas", p.input_alphas, k)], dtype=torch.float64
        ).clamp(min=EPS)  # [K, M]
        self.target_alphas = torch.tensor(
            [self._alphas(where, v) for where, v in _components("target_alphas", p.target_alphas, k)],
            dtype=torch.float64,
        ).clamp(min=EPS)  # [K, M]
        self.keep = torch.tensor([self._keep(where, v) for where, v in _components("keep", p.keep, k)])  # [K, M]
        self.weights = torch.tensor(_weights(p.weights, k), dtype=torch.float64)  # [K]
        self.input_range = (_budget_min("input_budget_min", p.input_budget_min, self.input_budget), self.input_budget)
        self.target_range = (
            _budget_min("target_budget_min", p.target_budget_min, self.target_budget),
            self.target_budget,
        )

    def __call__(self, tokens: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, Masks]:
        valid = {n: valid_positions(spec, tokens[n]) for n, spec in self.specs.items()}
        available = torch.stack([v.sum(1) for v in valid.values()], dim=1)  # [B, M]
        b, device = available.shape[0], available.device
        component = torch.multinomial(self.weights.to(device), b, replacement=True, generator=generator)  # [B]
        num_input, num_target = (
            torch.randint(lo, hi + 1, (b,), generator=generator, device=device)
            for lo, hi in (self.input_range, self.target_range)
        )
        num_input = self.input_counts(available.sum(1), num_input)
        keep = self.keep.to(device)[component]  # [B, M]

        input_share = split_budget(num_input, self.input_alphas.to(device)[component], generator).minimum(available)
        input_share = input_share.masked_fill(keep == NONE, 0)
        whole = (keep == ALL) & (input_share > 0)
        wanted = torch.where(whole, available - input_share, 0)
        unused = num_input - input_share.sum(1)  # [B]: dropped by the clamps
        # Whole sequences take the unused budget in name order; the input budget still holds.
        granted = (unused[:, None] - (wanted.cumsum(1) - wanted)).clamp(min=0).minimum(wanted)
        input_share = input_share + granted

        target_cap = torch.where(whole, 0, available - input_share)
        target_alphas = self.target_alphas.to(device)[component]
        target_share = split_budget(num_target, target_alphas, generator).minimum(target_cap)
        return {
            n: select(random_ranks(valid[n], generator), input_share[:, i], target_share[:, i])
            for i, n in enumerate(self.specs)
        }

    def _alphas(self, where: str, value: Any) -> list[float]:
        """One component's alphas in modality order; ``where`` names it in error messages."""
        value = spread(value, list(self.specs))
        if isinstance(value, Mapping):
            if unknown := sorted(set(value) - set(self.specs)):
                raise ValueError(f"{where}.{unknown[0]}: unknown modality; modalities: {', '.join(self.specs)}")
            if missing := [n for n in self.specs if n not in value]:
                raise ValueError(f"{where}: no alpha for {missing}; give one for each of {', '.join(self.specs)}")
            alphas = [_alpha(f"{where}.{n}", value[n]) for n in self.specs]
        else:
            alphas = [_alpha(where, value)] * len(self.specs)
        if not any(alphas):
            raise ValueError(f"{where}: every alpha is 0; at least one modality needs alpha > 0")
        return alphas

    def _keep(self, where: str, value: Any) -> list[int]:
        """One component's keep-scheme codes in modality order."""
        value = spread(value, list(self.specs))
        if value is None:
            return [RANDOM] * len(self.specs)
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}={value!r}: must be a mapping {{sequence modality: {'|'.join(KEEP_SCHEMES)}}}")
        sequences = [n for n, s in self.specs.items() if s.kind == "sequence"]
        for name, scheme in value.items():
            if name not in sequences:
                raise ValueError(
                    f"{where}.{name}: keep-schemes apply to sequence modalities only ({', '.join(sequences) or 'none'})"
                )
            if scheme not in KEEP_SCHEMES:
                raise ValueError(f"{where}.{name}={scheme!r}: must be one of {', '.join(KEEP_SCHEMES)}")
        return [KEEP_SCHEMES.index(value.get(n, "random")) for n in self.specs]


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str)


def _components(key: str, value: Any, k: int) -> list[tuple[str, Any]]:
    """(where, value) per mixture component: a list names its items, a single value repeats."""
    if _is_list(value):
        return [(f"masking.{key}[{i}]", v) for i, v in enumerate(value)]
    return [(f"masking.{key}", value)] * k


def _alpha(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}={value!r}: must be a number >= 0")
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{where}={value!r}: must be >= 0 and finite")
    return float(value)


def _weights(value: Any, k: int) -> list[float]:
    if value is None:
        return [1.0] * k
    if not _is_list(value) or len(value) != k:
        raise ValueError(f"masking.weights={value!r}: must be a list of {k} numbers >= 0, one per mixture component")
    weights = [_alpha(f"masking.weights[{i}]", w) for i, w in enumerate(value)]
    if not sum(weights) > 0:
        raise ValueError(f"masking.weights={value!r}: at least one weight must be > 0")
    return weights


def _budget_min(key: str, value: Any, budget: int) -> int:
    if value is None:
        return budget
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= budget:
        raise ValueError(f"masking.{key}={value!r}: must be an integer in [0, {budget}] (at most the budget)")
    return value
