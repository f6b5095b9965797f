"""Which model speaks for each masking of the study (``Run.masking``: a preset such as ``dirichlet_4m``, or a
family): its best finished run by the study's objective.

The objective is the study's search metric and direction when it is a search, else the first
report metric in its direction (``model/tasks.py``; the study file is refused without one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ablate.overview import rows
from ablate.schema import StudyError
from ablate.study import Run, Study
from model.checkpoint import load_masking, load_run
from model.config import Config
from model.dataset import ModalitySpec
from model.masking import MaskingStrategy
from model.network import FourM
from model.tasks import direction


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str  # "minimize" or "maximize"
    source: str  # the study key it comes from

    def better(self, a: float, b: float) -> bool:
        return a < b if self.direction == "minimize" else a > b


def objective(study: Study) -> Objective:
    if study.spec.search is not None:
        return Objective(study.spec.search.metric, study.spec.search.direction, "search.metric")
    metric = study.spec.report.metrics[0]
    return Objective(metric, "minimize" if direction(metric) == "lower" else "maximize", "report.metrics[0]")


@dataclass(frozen=True)
class Choice:
    run: Run
    value: float  # the objective


def best_runs(study: Study) -> dict[str, Choice]:
    """Masking (``Run.masking``) -> its best finished run with a checkpoint, in study order."""
    goal = objective(study)
    best: dict[str, Choice] = {}
    for row in rows(study):
        value = row.record.metric(goal.metric) if row.record else None
        if row.state != "done" or value is None or not math.isfinite(value):
            continue
        if row.run.folder.latest_checkpoint() is None:
            continue
        masking = row.run.masking
        if masking not in best or goal.better(value, best[masking].value):
            best[masking] = Choice(row.run, value)
    if not best:
        raise StudyError(f"{study.path}: no finished run with a checkpoint and a value of {goal.metric!r} "
                         f"(the study's {goal.source}); run `ablate submit {study.path}` first")
    return best


@dataclass
class Strategy:
    """One masking's chosen run, loaded: the model, its config and its training masking."""

    name: str  # the study's masking choice it speaks for (Run.masking)
    choice: Choice
    model: FourM
    cfg: Config
    specs: dict[str, ModalitySpec]
    masking: MaskingStrategy

    @classmethod
    def load(cls, name: str, choice: Choice) -> Strategy:
        model, cfg, specs = load_run(choice.run.out_dir)
        return cls(name, choice, model, cfg, specs, load_masking(choice.run.out_dir, cfg))

    def describe(self) -> dict:
        run = self.choice.run
        return {"masking": self.name, "family": run.family, "run": run.key, "label": run.label, "seed": run.seed,
                "objective": self.choice.value, "model": {"enc_depth": self.cfg.model.enc_depth,
                                                          "dec_depth": self.cfg.model.dec_depth}}


def load_strategies(study: Study) -> dict[str, Strategy]:
    """Every masking's best run, loaded; they must share one data set (the page shows them one scene)."""
    strategies = {name: Strategy.load(name, choice) for name, choice in best_runs(study).items()}
    roots = {s.cfg.data.root for s in strategies.values()}
    if len(roots) > 1:
        raise StudyError(f"{study.path}: the best runs use different data sets {sorted(roots)}; "
                         "the explorer compares models on one")
    return strategies
