"""The masking interface shared by every strategy family, and the helpers they build on.

A strategy sees a batch (modality -> int64 tokens [B, N_m]) and a ``torch.Generator`` and
returns, per modality, which positions the encoder sees (``input``) and which the decoder
must predict (``target``). Every strategy guarantees, per sample:

- ``input`` and ``target`` are disjoint;
- sequence ``[PAD]`` positions are never selected (``[EOS]`` is a real token);
- at most ``input_budget`` input and ``target_budget`` target tokens over all modalities.

Randomness comes only from the generator passed in, so the masking stream is separate from
data order and initialization, and the global RNG is left untouched.

Every family accepts ``mask_ratio``: the fraction of each sample's valid tokens hidden from
the encoder, so at most ``min(input_budget, round((1 - ratio) * valid))`` inputs (``None``:
the budget alone decides), with targets drawn from the hidden tokens up to ``target_budget``.
Any number among the parameters may be a schedule (``model/masking/schedules.py``).

Most families only say where the hidden tokens go: they subclass ``HidingStrategy`` and write
``hide``; its template ``__call__`` turns that into inputs and targets. The others write ``__call__``.

The trainer drives three hooks (no-ops unless a family needs them): ``set_progress`` before
every step (resolves schedules), ``observe`` after it (per-target losses, for adaptive
families) and ``state_dict``/``load_state_dict`` (what a checkpoint must keep).
"""

from __future__ import annotations

import copy
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import Field, dataclass, field, fields, replace
from typing import Any, ClassVar

import torch

from model.batch import DecoderInput, Masks
from model.dataset import ModalitySpec
from model.masking import schedules
from model.tokenizers import PAD


def param(default: Any, doc: str, preset: bool = True) -> Field:
    """A family parameter (a field of its ``Params``): the default, one line for the parameter tables, and
    whether the family's preset states it (see ``MaskingStrategy.preset``). Dicts and lists are copied."""
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"doc": doc, "preset": preset})
    return field(default=default, metadata={"doc": doc, "preset": preset})


class MaskingStrategy(ABC):
    """Base of all families: ``Strategy(specs, input_budget, target_budget, **params)(tokens, generator)``.

    A family declares its parameters as ``param(...)`` fields of a nested ``Params`` dataclass derived
    from ``MaskingStrategy.Params``: the default, a line of documentation and whether the family's
    preset states it. From them follow the preset ``masking=<family>`` (``preset()``), the docs' and
    ``ablate masking``'s parameter tables (``model/masking/describe.py``) and the contract tests.
    Unknown parameters raise ``ValueError`` naming the parameter and the allowed ones, and
    ``configure`` checks values and derives what ``__call__`` needs. Modalities are always handled in
    sorted name order (as packing does).
    """

    name: ClassVar[str] = ""  # set by @register

    @dataclass
    class Params:
        mask_ratio: Any = param(None, "null, or the fraction of each sample's valid tokens hidden from the encoder, "
                                      "in [0, 1]", preset=False)

    def __init__(self, specs: dict[str, ModalitySpec], input_budget: int, target_budget: int, **params):
        for key, value in (("input_budget", input_budget), ("target_budget", target_budget)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"masking.{key}={value!r}: must be an integer >= 0")
        if not specs:
            raise ValueError("masking: no modalities to mask")
        allowed = [f.name for f in fields(self.Params)]
        for key in params:
            if key not in allowed:
                raise ValueError(
                    f"masking.{key}: unknown parameter of the {self.name!r} masking; "
                    f"allowed: {', '.join(allowed)}"
                )
        self.specs = {n: specs[n] for n in sorted(specs)}
        self.input_budget = input_budget
        self.target_budget = target_budget
        given = self.Params(**params)  # defaults filled in
        self.scheduled = self.Params(**{f.name: schedules.find(f"masking.{f.name}", getattr(given, f.name))
                                        for f in fields(given)})
        self.has_schedules = any(schedules.contains(getattr(self.scheduled, f.name)) for f in fields(given))
        # Check both ends of every schedule now (values in between lie between them), then start.
        for t in (1.0, 0.0):
            self.params = self._resolved(lambda s, t=t: s.at(t))
            self.configure()

    @classmethod
    def summary(cls) -> str:
        """The first line of the family's module docstring (``name``: what it does), without the name."""
        return (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0].removeprefix(f"``{cls.name}``: ")

    @classmethod
    def preset(cls) -> dict[str, Any]:
        """The config ``masking=<family>`` selects: the name, ``auto`` budgets (``model/fit_to_data.py``) and every
        parameter declared ``preset=True`` at its default. What it states is part of each run's config (and
        so of its run key); the other parameters take their defaults unless a study sets them."""
        stated = {f.name: default_of(f) for f in fields(cls.Params) if f.metadata.get("preset", True)}
        return {"name": cls.name, "input_budget": "auto", "target_budget": "auto", **stated}

    def configure(self) -> None:
        """Check ``self.params`` (``ValueError`` naming ``masking.<param>``) and derive what ``__call__`` needs.

        Runs at construction and again whenever a schedule changes a value.
        """
        ratio = self.params.mask_ratio
        if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float))
                                  or not 0.0 <= ratio <= 1.0):
            raise ValueError(f"masking.mask_ratio={ratio!r}: must be null or a number in [0, 1]")

    @abstractmethod
    def __call__(self, tokens: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, Masks]:
        """tokens: modality -> int64 [B, N_m] -> modality -> Masks (bool [B, N_m] each)."""

    # Trainer hooks.

    def set_progress(self, step: int, total_steps: int) -> None:
        """Called before every training step: resolves scheduled parameters at ``step`` of ``total_steps``."""
        if not self.has_schedules:
            return
        params = self._resolved(lambda s: s(step, total_steps))
        if params != self.params:
            self.params = params
            self.configure()

    # Families that learn from training losses set this, so the trainer only gathers losses for them.
    learns_from_losses: ClassVar[bool] = False

    def observe(self, dec: DecoderInput, token_loss: torch.Tensor) -> None:  # noqa: B027 (a no-op hook)
        """Called after every step with the detached per-slot loss float [B, Ld] (pad slots ignored)."""

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must keep to resume this strategy exactly (empty for stateless families)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"the {self.name!r} masking keeps no state; got keys {sorted(state)}")

    # Helpers for families.

    def _resolved(self, evaluate: Callable[[schedules.Schedule], float]) -> Params:
        return replace(self.scheduled, **{f.name: schedules.resolve(getattr(self.scheduled, f.name), evaluate)
                                          for f in fields(self.scheduled)})

    def input_counts(self, available: torch.Tensor, budget: torch.Tensor | int | None = None) -> torch.Tensor:
        """How many inputs a sample may have: int64 valid totals [B] -> min(budget, round((1 - ratio) * valid)).

        ``budget`` (int or int64 [B]) defaults to ``input_budget``; a family drawing its own
        per-sample total passes that.
        """
        counts = available.minimum(torch.as_tensor(self.input_budget if budget is None else budget))
        if self.params.mask_ratio is None:
            return counts
        return counts.minimum(torch.floor((1.0 - self.params.mask_ratio) * available.double() + 0.5).long())

    @property
    def sequence_format(self) -> str:
        """How sequences reach the network: ``positions`` (pack the masks as they are) or ``t5``
        (``spans.to_t5`` turns them into sentinel inputs and targets before packing)."""
        return "positions"


class HidingStrategy(MaskingStrategy):
    """A family that says only which tokens to hide (``hide``); the template ``__call__`` does the rest.

    Per sample, the tokens the input budget and ``mask_ratio`` leave out (``valid - input_counts(valid)``) are
    hidden where ``hide`` puts them; every other valid token is input, and the targets are a uniformly random
    subset of the hidden tokens up to ``target_budget`` (MAE: the decoder predicts some of the masked tokens).
    """

    def __call__(self, tokens: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, Masks]:
        valid = [valid_positions(spec, tokens[n]) for n, spec in self.specs.items()]
        available = torch.stack([v.sum(1) for v in valid], 1)  # [B, M]
        total = available.sum(1)
        hidden = self.hide(tokens, valid, available, total - self.input_counts(total), generator)
        return self.masks_from_hidden(valid, hidden, generator)

    @abstractmethod
    def hide(self, tokens: dict[str, torch.Tensor], valid: list[torch.Tensor], available: torch.Tensor,
             num_hidden: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
        """Which valid tokens to hide, about ``num_hidden`` per sample.

        tokens: modality -> int64 [B, N_m]; valid: per modality (in ``specs`` order) bool [B, N_m];
        available: int64 [B, M], valid tokens per modality; num_hidden: int64 [B]
        -> per modality bool [B, N_m], hidden valid positions.
        """

    def masks_from_hidden(self, valid: list[torch.Tensor], hidden: list[torch.Tensor],
                          generator: torch.Generator) -> dict[str, Masks]:
        """Per modality bool [B, N_m] valid and hidden -> Masks: the visible tokens as input, a uniformly random
        subset of the hidden ones up to ``target_budget`` as target."""
        hidden_all = torch.cat(hidden, 1)
        visible = torch.cat(valid, 1) & ~hidden_all
        return split_columns(Masks(visible, targets_from_hidden(hidden_all, self.target_budget, generator)), self.specs)


def default_of(f: Field) -> Any:
    """A ``Params`` field's default (a fresh copy for dicts and lists)."""
    return f.default_factory() if callable(f.default_factory) else f.default


def valid_positions(spec: ModalitySpec, tokens: torch.Tensor) -> torch.Tensor:
    """Positions that may be masked: int64 [B, N] -> bool [B, N] (every image token, non-PAD sequence tokens)."""
    if spec.kind == "sequence":
        return tokens != PAD
    return torch.ones_like(tokens, dtype=torch.bool)


def random_ranks(valid: torch.Tensor, generator: torch.Generator, first: torch.Tensor | None = None,
                 upto: int | None = None) -> torch.Tensor:
    """A uniformly random order of each row's valid positions: bool [B, N] -> int64 rank [B, N].

    Valid positions get ranks 0..n_valid-1 in random order, invalid ones the ranks after
    them, so "rank < k" picks k random valid positions (MAE's argsort over noise). Valid
    positions in ``first`` (bool [B, N], optional) are ranked before the other valid ones.
    ``upto``: as in ``ranks``.
    """
    noise = torch.rand(valid.shape, generator=generator, device=valid.device)
    if first is not None:
        noise = noise - first.to(noise.dtype)  # [-1, 0): before every other valid position
    noise = noise.masked_fill(~valid, 2.0)  # after every valid position
    return ranks(noise, upto)


def ranks(key: torch.Tensor, upto: int | None = None) -> torch.Tensor:
    """Each entry's rank in its row by increasing ``key``: float [B, N] -> int64 [B, N].

    With ``upto``, only the ranks below it are exact and every other entry gets N: a partial
    sort (``topk``), about twice as fast as a full one when only the first few ranks are used.
    """
    n = key.shape[1]
    partial = upto is not None and upto < n
    order = key.topk(upto, dim=1, largest=False).indices if partial else key.argsort(dim=1)
    arange = torch.arange(order.shape[1], device=key.device).expand_as(order)
    return torch.full(key.shape, n, dtype=torch.long, device=key.device).scatter_(1, order, arange)


def select(ranks: torch.Tensor, num_input: torch.Tensor, num_target: torch.Tensor) -> Masks:
    """The first ``num_input`` ranks as input, the next ``num_target`` as target.

    ranks: int64 [B, N]; num_input, num_target: int64 [B] -> Masks of bool [B, N].
    """
    end_input = num_input[:, None]
    return Masks(ranks < end_input, (ranks >= end_input) & (ranks < end_input + num_target[:, None]))


def proportional(total: torch.Tensor, capacity: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Split each row's ``total`` over columns in proportion to ``capacity`` (largest remainder).

    int64 total [B] (<= capacity.sum(1)), capacity [B, M] -> int64 shares [B, M] summing to
    ``total``, each <= its capacity. Ties between equal remainders are broken at random.
    """
    whole = capacity.sum(1, keepdim=True).clamp(min=1)
    exact = total[:, None] * capacity
    share, remainder = exact // whole, exact % whole
    leftover = total - share.sum(1)  # < M
    noise = torch.rand(capacity.shape, generator=generator, device=capacity.device)
    order = (remainder.double() + noise).argsort(dim=1, descending=True)
    winners = torch.zeros_like(capacity, dtype=torch.bool).scatter_(
        1, order, torch.arange(capacity.shape[1], device=capacity.device).expand_as(order) < leftover[:, None]
    )
    return share + winners.long()


def targets_from_hidden(hidden: torch.Tensor, budget: torch.Tensor | int, generator: torch.Generator) -> torch.Tensor:
    """A uniformly random subset of each row's hidden positions, at most ``budget`` (int or int64 [B]):
    bool [B, N] -> bool [B, N]."""
    return random_ranks(hidden, generator) < hidden.sum(1).minimum(torch.as_tensor(budget))[:, None]


def split_columns(masks: Masks, specs: dict[str, ModalitySpec]) -> dict[str, Masks]:
    """Masks over all modalities concatenated in ``specs`` order -> modality -> Masks."""
    sizes = [s.num_tokens for s in specs.values()]
    return {n: Masks(i, t) for n, i, t in zip(specs, masks.input.split(sizes, dim=1), masks.target.split(sizes, dim=1))}
