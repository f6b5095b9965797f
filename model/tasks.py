"""What the evaluation measures: the one table a new task or metric extends.

A ``Task`` is a cross-modal generation (``given`` -> ``target``) scored on native predictions
against exact ground truth re-rendered from the generator: its metrics (name -> ``Metric``: which way is
better, how a paper names it, the values it can take), the function that scores them, the constant
prediction that is its trivial baseline, and whether it is dense (scored per pixel from the predicted
distribution in one pass, see ``model/evaluate.py``). Everything else follows from ``TASKS``: what ``evaluate`` runs and
returns, what a study may name as an objective or report column, which way is better
(``direction``: the arrows and the best values of report tables), how tables and figures name a metric
key (``paper_label``: "RGB→semseg" / "mIoU") and the range its intervals stay in (``metric_of``), the trivial
baselines and token ceilings (``model/evaluate.py``), and the docs' metric table (a test checks ``docs/studies.md``).

Metric keys are ``<task>/<metric>`` (``rgb_to_depth/abs_rel``), ``loss/<m>`` and ``acc/<m>`` (per
modality and ``mean``), and ``probe/count_acc``, each made by ``metric_key``; a run logs them under
``eval/`` (``eval_metric``: the name MLflow, study objectives and report columns use).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from math import inf
from pathlib import Path
from typing import Any, Literal

import numpy as np

from model.dataset import DatasetSpec, ModalitySpec
from model.metrics import (
    attribute_accuracy,
    box_miou,
    caption_objects,
    depth_metrics,
    scene_objects,
    semseg_miou,
    truth_boxes,
)
from model.scenes import SceneConfig, Scenes, render
from model.verifier import verifier_score

Direction = Literal["lower", "higher"]
EVAL_PREFIX = "eval/"  # what a run's logged name of an evaluation key starts with (``eval_metric``)


def metric_key(group: str, metric: str) -> str:
    """An evaluation key, as ``evaluate`` returns it and ``eval.json`` holds it: ``rgb_to_depth``, ``abs_rel`` ->
    ``rgb_to_depth/abs_rel``; ``loss``, ``rgb`` -> ``loss/rgb``."""
    return f"{group}/{metric}"


def eval_metric(key: str) -> str:
    """The name a run logs an evaluation key under: ``rgb_to_depth/abs_rel`` -> ``eval/rgb_to_depth/abs_rel``."""
    return EVAL_PREFIX + key


@dataclass(frozen=True)
class Metric:
    """A score: which way is better, how a paper names it, and the values it can take (``low`` to ``high``)."""

    better: Direction
    label: str
    low: float = 0.0
    high: float = 1.0


# How a paper writes a modality where that differs from its name (an acronym); the others keep their names.
MODALITY_LABELS = {"rgb": "RGB"}


@dataclass(frozen=True)
class Label:
    """How a paper names a metric key: ``group`` (a task, ``loss``, ...) over ``name`` in a two-level header, and
    ``line`` where it takes one line (an axis)."""

    group: str
    name: str
    line: str


@dataclass
class Truth:
    """Ground truth of the first scenes of a split of a generated data set."""

    cfg: SceneConfig
    scenes: Scenes

    @classmethod
    def load(cls, spec: DatasetSpec, split: str, num: int) -> Truth:
        cfg = SceneConfig(**spec.generator["scene"])
        return cls(cfg, render(cfg, spec.generator["seed"], split, np.arange(num)))

    def native(self, modality: str) -> Any:
        # Imported here: the modalities bring their tokenizers (torch), and this module is read without torch
        # wherever a study's metric names are checked.
        from model.modalities import MODALITIES

        return MODALITIES[modality].truth(self.cfg, self.scenes)

    @property
    def counts(self) -> np.ndarray:
        """Visible objects per scene: int64 [B]."""
        return self.scenes.present.sum(1)


@dataclass(frozen=True)
class Task:
    """``given`` -> ``target``, scored by ``score(pred, truth) -> {metric: value}`` (one prediction per scene of
    ``truth``, native form); ``trivial(val, train)`` is the prediction that ignores the input."""

    given: str
    target: str
    metrics: dict[str, Metric]
    score: Callable[[Any, Truth], dict[str, float]]
    trivial: Callable[[Truth, Truth], Any]
    dense: bool = False  # an image nearly determined by its input: the distribution decoded per pixel, one pass

    @property
    def name(self) -> str:
        return f"{self.given}_to_{self.target}"

    @property
    def label(self) -> str:
        """``rgb_to_semseg`` -> ``RGB→semseg``."""
        return "→".join(MODALITY_LABELS.get(m, m) for m in (self.given, self.target))


def _most_common(values: Any) -> Any:
    return Counter(values).most_common(1)[0][0]


def _typical_objects(val: Truth, train: Truth) -> list[list[str]]:
    """``max_objects`` copies of the most frequent size, color and shape, as caption words."""
    objects = [o for scene in scene_objects(train.cfg, train.scenes) for o in scene]
    size, color, shape = (_most_common(values) for values in zip(*objects))
    return [" and ".join([f"{size} {color} {shape}"] * val.cfg.max_objects).split()] * len(val.scenes)


def _typical_boxes(val: Truth, train: Truth) -> list[list[str]]:
    """``max_objects`` copies of the most frequent class and the mean box, as boxes words."""
    classes = [c for scene in truth_boxes(train.cfg, train.scenes) for c, _ in scene]
    mean_box = np.round(train.scenes.box[train.scenes.present].mean(0)).astype(int)
    return [[_most_common(classes), *(f"@{v}" for v in mean_box)] * val.cfg.max_objects] * len(val.scenes)


TASKS: dict[str, Task] = {task.name: task for task in [
    Task("rgb", "semseg", {"miou": Metric("higher", "mIoU")}, dense=True,
         score=lambda pred, t: {"miou": semseg_miou(pred, t.scenes.semseg, t.cfg.num_classes)},
         trivial=lambda val, train: np.full_like(val.scenes.semseg, np.bincount(train.scenes.semseg.ravel()).argmax())),
    Task("rgb", "depth", {"delta1": Metric("higher", "δ1"), "abs_rel": Metric("lower", "abs rel", high=inf)},
         dense=True,
         score=lambda pred, t: depth_metrics(pred, t.scenes.depth),
         trivial=lambda val, train: np.broadcast_to(train.scenes.depth.mean(0), val.scenes.depth.shape)),
    Task("rgb", "caption", {"attr_acc": Metric("higher", "attribute acc")},
         score=lambda pred, t: {"attr_acc": attribute_accuracy([caption_objects(w, t.cfg) for w in pred],
                                                               scene_objects(t.cfg, t.scenes))},
         trivial=_typical_objects),
    Task("rgb", "boxes", {"miou": Metric("higher", "mIoU")},
         score=lambda pred, t: {"miou": box_miou(pred, truth_boxes(t.cfg, t.scenes))},
         trivial=_typical_boxes),
    Task("caption", "rgb", {"verifier": Metric("higher", "verifier")},
         score=lambda pred, t: {"verifier": verifier_score(pred, t.native("caption"), t.cfg)},
         trivial=lambda val, train: np.roll(val.scenes.rgb, 1, axis=0)),  # the true image of another scene
]}
PROBE = metric_key("probe", "count_acc")  # a ridge probe on rgb-only encoder features, predicting the number of objects

# Every metric by name: a name means one thing in every task (``miou`` is higher-better in both rgb_to_semseg and
# rgb_to_boxes), and ``loss``/``acc`` name the per-modality masked-token metrics.
SCORES: dict[str, Metric] = {"loss": Metric("lower", "loss", high=inf), "acc": Metric("higher", "acc"),
                             PROBE.split("/")[1]: Metric("higher", "count acc")}
for _task in TASKS.values():
    for _name, _metric in _task.metrics.items():
        if SCORES.setdefault(_name, _metric) != _metric:
            raise ValueError(f"{_task.name}/{_name}: {_metric}, but {_name} is {SCORES[_name]} elsewhere")
METRICS: dict[str, Direction] = {name: metric.better for name, metric in SCORES.items()}  # which way is better


def metric_of(key: str) -> Metric | None:
    """The metric a key names, by its last part that names one: ``eval/rgb_to_depth/abs_rel`` -> abs_rel's,
    ``train/loss/rgb`` -> loss's; None for what is not a score (``train/lr``, ``train/tokens_per_s``, ``masks/...``)."""
    return next((SCORES[part] for part in reversed(key.split("/")) if part in SCORES), None)


def direction(key: str) -> Direction | None:
    """Which way is better for a metric key (``metric_of``): ``eval/rgb_to_depth/abs_rel`` -> lower,
    ``train/loss/rgb`` -> lower, ``eval/acc/mean`` -> higher; None for what is not a score."""
    return metric.better if (metric := metric_of(key)) else None


def paper_label(key: str) -> Label:
    """How tables and figures name a metric key: ``eval/rgb_to_semseg/miou`` -> RGB→semseg / mIoU ("RGB→semseg
    mIoU"), ``eval/loss/mean`` -> loss / mean ("loss (mean)"), ``eval/acc/rgb`` -> acc / RGB ("acc (RGB)"),
    ``eval/probe/count_acc`` -> probe / count acc; another key (``train/loss``) is its own name, in no group."""
    group, _, name = key.removeprefix(EVAL_PREFIX).partition("/")
    if group in TASKS and name in TASKS[group].metrics:
        task, metric = TASKS[group].label, TASKS[group].metrics[name].label
        return Label(task, metric, f"{task} {metric}")
    if group in ("loss", "acc") and name and "/" not in name:
        kind, modality = SCORES[group].label, MODALITY_LABELS.get(name, name)
        return Label(kind, modality, f"{kind} ({modality})")
    if key.removeprefix(EVAL_PREFIX) == PROBE:
        return Label(group, SCORES[name].label, f"{SCORES[name].label} (probe)")
    return Label("", key.removeprefix(EVAL_PREFIX), key.removeprefix(EVAL_PREFIX))


def skipped_tasks(specs: dict[str, ModalitySpec], data_root: str | Path) -> dict[str, str]:
    """The cross-modal tasks (and ``probe``) ``evaluate`` leaves out on this data set -> why."""
    if DatasetSpec.load(data_root).generator is None:
        why = "needs ground truth, which only a generated data set has (bring-your-own tokens: loss and accuracy)"
        return {name: why for name in [*TASKS, "probe"]}
    needs = {name: (task.given, task.target) for name, task in TASKS.items()} | {"probe": ("rgb",)}
    missing = {name: [m for m in modalities if m not in specs] for name, modalities in needs.items()}
    return {name: f"the data set has no {' or '.join(absent)}" for name, absent in missing.items() if absent}


def metric_names(specs: dict[str, ModalitySpec], generated: bool) -> list[str]:
    """The keys ``evaluate`` returns for these modalities (``generated``: the data set has ground truth)."""
    keys = [metric_key(kind, n) for kind in ("loss", "acc") for n in [*sorted(specs), "mean"]]
    if generated:
        keys += [metric_key(name, metric) for name, task in TASKS.items()
                 if task.given in specs and task.target in specs for metric in task.metrics]
        keys += [PROBE] if "rgb" in specs else []
    return keys
