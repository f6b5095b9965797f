"""How a configuration fits its data set: what the masking presets leave to the data.

The masking presets (``model/conf/masking/``) are written for any data set:

- ``input_budget: auto`` and ``target_budget: auto``: 4M's 128 input and 64 target tokens, or, on a data
  set with fewer than 192 tokens per sample, two thirds and one third of them, so that every sample has
  inputs and targets (``default_budgets``);
- a masking parameter keyed by modality (Dirichlet alphas, keep-schemes) may have a ``default`` key: its
  value for every modality of the data set not named beside it (``input_alphas: {default: 0.2, rgb: 1.0}``),
  so a preset names no modality a data set may lack.

``fit`` checks a config's data set (every split and array, ``model.dataset.verify``) and writes these
values into the config, so a run's resolved config (and its identity) holds the numbers it trains with.
No torch is needed: a study is checked this far before its masking strategies are built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from model.config import Config, ConfigError
from model.dataset import DatasetSpec, verify

AUTO = "auto"
DEFAULT = "default"
BUDGETS = (128, 64)  # 4M's input and target budgets (ml-4m cfgs/default/4m)


def default_budgets(total: int) -> tuple[int, int]:
    """(input, target) budgets for ``total`` tokens per sample: 128 and 64, or 2/3 and 1/3 of fewer than 192."""
    if total >= sum(BUDGETS):
        return BUDGETS
    inputs = max(1, 2 * total // 3)
    return inputs, total - inputs


def spread(value: Any, modalities: list[str]) -> Any:
    """A per-modality mapping with its ``default`` replaced by an entry for each modality it does not name
    (other keys are kept, for the strategy to refuse); a list is spread item by item; anything else as it is."""
    if isinstance(value, list):
        return [spread(v, modalities) for v in value]
    if not isinstance(value, Mapping) or DEFAULT not in value:
        return value
    named = {k: v for k, v in value.items() if k != DEFAULT}
    return {n: named.get(n, value[DEFAULT]) for n in modalities} | named


def fit(cfg: Config) -> DatasetSpec:
    """Check ``cfg``'s data set and resolve ``auto`` budgets and ``default`` entries in ``cfg.masking`` (in
    place); returns the data set's spec. Raises ``DataFormatError`` naming the file, ``ConfigError`` the key."""
    spec = verify(cfg.data.root)
    total = sum(s.num_tokens for s in spec.modalities.values())
    if total < 2:
        raise ConfigError(f"data.root={cfg.data.root}: {total} token per sample; masked modeling needs at least 2 "
                          "(one input, one target)")
    masking = cfg.masking
    for key, default in zip(("input_budget", "target_budget"), default_budgets(total)):
        value = masking.get(key)
        if value == AUTO:
            masking[key] = default
        elif not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= total:
            raise ConfigError(f"masking.{key}={value!r}: must be an integer from 1 to {total}, the number of tokens "
                              f"per sample in {cfg.data.root}, or {AUTO} ({default} there)")
    for key, value in masking.items():
        masking[key] = spread(value, sorted(spec.modalities))
    return spec
