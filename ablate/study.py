"""A study: one YAML file, validated as a whole, expanded into runs keyed by what they train.

A run is ``(resolved config, seed)``. Its key, ``<config hash>-s<seed>``, names its folder
``<study dir>/runs/<key>/`` and tags its MLflow run, so a resubmitted study finds its runs again
whatever job ids the scheduler hands out. The hash covers the resolved config except the seed
and the bookkeeping the study fills in itself (``BOOKKEEPING``).

The study folder, ``studies/<name>/`` next to the YAML, holds ``runs/``, ``submitit/`` (job logs) and,
unless its ``tracking:`` section points elsewhere (``Study.store``), ``mlflow.db`` (the study's MLflow store,
beside ``artifacts/``) and ``optuna.journal`` (a search's trials).

A study file is read by ``ablate/study_file.py`` and checked by ``ablate/validate.py``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate.schema import StudySpec
from ablate.store import Store
from model.config import Config, compose, to_dict
from model.fit_to_data import fit
from model.run_folder import RunFolder

# Config keys the study sets itself; the message says what to use instead.
BOOKKEEPING = {
    "train.seed": "list seeds under 'seeds'",
    "train.out_dir": "runs live in the study folder",
    "train.threads": "use executor.threads_per_run",
    "tracking": "the study's tracking: section says where its runs are recorded",
}
# Config keys that say how a run is executed, not what it trains: left out of its identity, so that setting
# one (train.compile on a GPU) or a new one arriving with its default keeps the keys of runs already recorded.
EXECUTION = ("train.feed", "train.compile", "train.peak_tflops")


@dataclass(frozen=True)
class Run:
    """One training run of a study: a resolved config (bookkeeping filled in) and a seed."""

    key: str
    config_hash: str
    seed: int
    settings: dict[str, Any]  # what sets it apart in its study: variant name, grid values or search params
    overrides: dict[str, Any]  # every study override it was composed from
    config: dict = field(repr=False)

    @property
    def out_dir(self) -> Path:
        return Path(self.config["train"]["out_dir"])

    @property
    def family(self) -> str:
        """The masking family it trains with (the config's ``masking.name``: ``dirichlet``)."""
        return self.config["masking"]["name"]

    @property
    def masking(self) -> str:
        """The study's masking choice, the name reports, MLflow (tag ``masking``) and the explorer know it by: the
        preset the study names under ``masking`` (``dirichlet_4m``; a family's own preset bears its name), or the
        family where the study names no preset or sets ``masking.name`` itself."""
        preset = self.overrides.get("masking")
        return preset if isinstance(preset, str) and "masking.name" not in self.overrides else self.family

    @property
    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.settings.items()) or self.config_hash

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.out_dir)

    def progress(self) -> tuple[int, float | None]:
        """Last logged step and training loss (0 and None before the first)."""
        step, metrics = self.folder.last_logged() or (0, {})
        return step, metrics.get("train/loss")

    def checkpoint_step(self) -> int | None:
        """The step of the checkpoint the run resumes from, None before its first."""
        return self.folder.latest_step()


@dataclass
class Study:
    """A validated study file, where it keeps its state, and its runs (a search has none up front)."""

    spec: StudySpec
    path: Path
    runs: list[Run] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def dir(self) -> Path:
        return self.path.parent.resolve() / self.spec.name

    @property
    def store(self) -> Store:
        """Where its runs are recorded and a search's trials kept: the ``tracking:`` section, or its own files."""
        tracking = self.spec.tracking
        if tracking.uri is None:
            return Store(f"sqlite:///{self.dir / 'mlflow.db'}", (self.dir / "artifacts").as_uri(),
                         str(self.dir / "optuna.journal"))
        shared = Path(tracking.artifacts).as_uri() if tracking.artifacts else None
        if tracking.uri.startswith("postgresql"):
            return Store(tracking.uri, shared or (self.dir / "artifacts").as_uri(), tracking.database or tracking.uri)
        return Store(tracking.uri, shared, tracking.database)

    def run_folder(self, key: str) -> RunFolder:
        """The folder of the run ``key`` (its ``train.out_dir``), known without expanding the study."""
        return RunFolder(self.dir / "runs" / key)

    def make_run(self, overrides: dict[str, Any], seed: int, settings: dict[str, Any]) -> Run:
        """Compose and check one run; raises ``ConfigError``/``DataFormatError``."""
        return self.make_runs(overrides, [seed], settings)[0]

    def make_runs(self, overrides: dict[str, Any], seeds: list[int], settings: dict[str, Any]) -> list[Run]:
        """One config composed and checked once (its masking strategy built), then one run per seed."""
        from model.run_setup import check

        cfg = fitted(overrides)
        check(cfg)
        return self.runs_of(cfg, overrides, seeds, settings)

    def runs_of(self, cfg: Config, overrides: dict[str, Any], seeds: list[int], settings: dict[str, Any]) -> list[Run]:
        """One run per seed of a config fitted to its data set (``fitted``)."""
        resolved = to_dict(cfg)
        digest = config_hash(resolved)
        runs = []
        for seed in seeds:
            key = f"{digest}-s{seed}"
            config = copy.deepcopy(resolved)
            config["train"].update(seed=seed, out_dir=str(self.run_folder(key).path),
                                   threads=self.spec.executor.threads_per_run)
            config["tracking"].update(uri=self.store.uri, experiment=self.name, run_name=key, enabled=True,
                                      request_timeout=self.spec.tracking.request_timeout)
            runs.append(Run(key, digest, seed, settings, dict(overrides), config))
        return runs


def fitted(overrides: dict[str, Any]) -> Config:
    """The config of a study's overrides, composed and fitted to its data set (``model/fit_to_data.py``), torch-free;
    raises ``ConfigError``/``DataFormatError``."""
    cfg = compose([override(k, v) for k, v in overrides.items()])
    fit(cfg)
    return cfg


def config_hash(config: dict) -> str:
    """12 hex digits of the resolved config, seed, bookkeeping and execution keys excluded."""
    identity = copy.deepcopy(config)
    for dotted in (*BOOKKEEPING, *EXECUTION):
        section, _, leaf = dotted.partition(".")
        if leaf:
            identity[section].pop(leaf, None)
        else:
            identity.pop(section, None)
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


_PLAIN = re.compile(r"[A-Za-z_/][\w\-./]*")


def override(key: str, value: Any) -> str:
    """A Hydra override ``key=value`` for a YAML value (strings quoted unless plainly a word or path);
    ``compose`` sets a masking parameter whether or not the chosen preset has it."""
    return f"{key}={_hydra_value(value)}"


def _hydra_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in {"true", "false", "null", "nan", "inf"}:
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def settings_keys(spec: StudySpec) -> list[str]:
    """What sets a study's runs apart (``Run.settings``): the variant name, grid axes, or search parameters."""
    if spec.search:
        return list(spec.search.params)
    return ["variant"] * bool(spec.variants) + list(spec.grid)


def matches(run: Run, selector: dict[str, Any]) -> bool:
    return all(run.overrides.get(k) == v or run.settings.get(k) == v for k, v in selector.items())
