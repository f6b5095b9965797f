"""A run's setup: its config checked against its data set, what every run needs before its first step.

``check`` is the one gate: ``train`` runs it first, a study runs it for every configuration it
would launch (before launching any), and loading a run back runs it on the run's config.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.build import codebooks
from model.config import Config, ConfigError
from model.dataset import ModalitySpec
from model.fit_to_data import fit
from model.masking import MaskingStrategy, build_masking
from model.network import FourM


@dataclass
class Setup:
    """Everything checked before a run starts: data spec, masking, budgets."""

    specs: dict[str, ModalitySpec]
    masking: MaskingStrategy
    input_budget: int
    target_budget: int

    def new_model(self, cfg: Config) -> FourM:
        """The network for this data set, with its image codebooks (read here: validation never needs them)."""
        return FourM(cfg.model, self.specs, codebooks(cfg.data.root))


def check(cfg: Config) -> Setup:
    """Validate a config against its data set (every split; ``auto`` budgets and ``default`` alphas resolved in
    ``cfg``, see ``model/fit_to_data.py``); raises ``ConfigError``/``DataFormatError`` naming the key or path."""
    spec = fit(cfg)
    m = dict(cfg.masking)
    name, input_budget, target_budget = m.pop("name"), m.pop("input_budget"), m.pop("target_budget")
    try:
        masking = build_masking(name, spec.modalities, input_budget, target_budget, m)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.train.feed == "prefetch" and masking.learns_from_losses:
        raise ConfigError(f"train.feed=prefetch: the {name!r} masking learns from the last step's losses, so its "
                          f"batches cannot be made ahead; use train.feed=auto or inline")
    return Setup(spec.modalities, masking, input_budget, target_budget)
