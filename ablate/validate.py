"""Checking a study before anything runs.

A file is checked in two rounds, each reporting all it finds. The first needs no torch, so a refusal
comes back in well under a second: the file itself (size, UTF-8, YAML, aliases written out) and the
schema (``ablate/study_file.py``), then here the keys, the grid's size, and every configuration composed
and fitted to its data set (``model/fit_to_data.py``: every array checked), duplicates included. Only a file
without such problems gets the second round: every configuration's masking strategy built (torch), and
the metrics it names. A problem names the study key it comes from (``_attribute``).
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import reprlib
import sys
from typing import Any

import yaml
from tqdm import tqdm

from ablate.schema import SearchParam, StudySpec
from ablate.store import kind
from ablate.study import BOOKKEEPING, Study, fitted, matches, settings_keys
from model.config import CONF_DIR, Config, ConfigError, DataConfig, group_options
from model.dataset import DataFormatError, DatasetSpec

PROGRESS_FROM = 200  # configurations: more, and their checking shows a progress bar
Fitted = tuple[Config, dict[str, tuple[str, Any]], dict[str, Any]]  # a config, where its overrides come from, settings


def first_round(study: Study) -> tuple[list[str], list[Fitted]]:
    """Check everything torch-free and fill ``study.runs`` (a search's stay empty); returns the problems, and
    the configurations the second round builds a strategy for (one per distinct masking setup)."""
    spec = study.spec
    problems, bad_choices = _check_keys(spec)
    problems += layout_problems(spec) + _tracking_problems(spec)
    expanded, configs = (_expand if spec.search is None else _check_search)(study, bad_choices)
    return problems + expanded, configs


def second_round(spec: StudySpec, configs: list[Fitted]) -> list[str]:
    """Build the configurations' masking strategies and check the metrics the study names (imports torch)."""
    return _check_strategies(configs) + _check_metrics(spec)


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 3, 8, 8, 80, 80


def abbreviated(value: Any) -> str:
    """``repr`` of a value from a study file, abbreviated with ``...`` where long or deep."""
    return _REPR.repr(value)


@functools.cache
def families() -> list[str]:
    """The masking families (``model.masking.STRATEGIES``), read from the presets without importing torch:
    every family has a preset of its own name (``model/conf/masking/<family>.yaml``, written from the family
    by ``ablate masking --write``; a test checks)."""
    return sorted({yaml.safe_load(p.read_text())["name"] for p in (CONF_DIR / "masking").glob("*.yaml")})


def _sources(spec: StudySpec) -> list[tuple[str, str, list[Any]]]:
    """Every (study key path, config key, values) the study sets."""
    out = [(f"base.{k}", k, [v]) for k, v in spec.base.items()]
    out += [(f"grid.{k}", k, v) for k, v in spec.grid.items()]
    out += [(f"variants.{n}.{k}", k, [v]) for n, o in spec.variants.items() for k, v in o.items()]
    if spec.search:
        out += [(f"search.params.{k}", k, p.choices or []) for k, p in spec.search.params.items()]
    if spec.report.baseline:
        out += [(f"report.baseline.{k}", k, [v]) for k, v in spec.report.baseline.items()]
    return out


def _tracking_problems(spec: StudySpec) -> list[str]:
    """A search tracked to a server needs the server's database for its trials (Optuna cannot go through MLflow)."""
    tracking = spec.tracking
    if spec.search and tracking.uri and kind(tracking.uri) == "server" and tracking.database is None:
        return ["tracking.database: a search tracked to an MLflow server keeps its Optuna trials in the server's "
                "PostgreSQL; name it (postgresql://user@host:port/db)"]
    return []


def _check_keys(spec: StudySpec) -> tuple[list[str], set[tuple[str, str]]]:
    """Bookkeeping keys, group choices and masking names, before anything is composed.

    Returns the problems and the unknown (key, choice) pairs, whose configurations are not composed.
    """
    problems, bad_choices = [], set()
    groups = group_options()
    for path, key, values in _sources(spec):
        bare = key.lstrip("+~")
        for reserved, instead in BOOKKEEPING.items():
            if bare == reserved or bare.startswith(reserved + "."):
                problems.append(f"{path}: set by the study ({instead})")
        allowed = groups.get(bare) or (families() if bare == "masking.name" else None)
        what = "masking strategy" if bare.startswith("masking") else f"{bare} choice"
        for value in values if allowed else []:
            if not isinstance(value, str):
                bad_choices.add((key, repr(value)))
                into = f"; a key under it is {bare}.<key>: value" if isinstance(value, dict) else ""
                problems.append(f"{path}: {abbreviated(value)}: a {what} is a name, one of {', '.join(allowed)}{into}")
            elif value not in allowed:
                bad_choices.add((key, repr(value)))
                problems.append(f"{path}: {value!r}: unknown {what}; allowed: {', '.join(allowed)}")
    for axis, values in spec.grid.items():
        if len({repr(v) for v in values}) < len(values):
            twice = next(v for i, v in enumerate(values) if repr(v) in map(repr, values[:i]))
            problems.append(f"grid.{axis}: {abbreviated(twice)} is given twice; give each value once")
    if len(set(spec.seeds)) < len(spec.seeds):
        problems.append(f"seeds: {abbreviated(spec.seeds)}: seeds must be distinct")
    for name, overrides in spec.variants.items():
        if shared := sorted(set(overrides) & set(spec.grid)):
            problems.append(f"variants.{name}: sets {shared}, which are also grid axes; set each key in one place")
    if spec.search and (spec.grid or spec.variants):
        problems.append("search: a study is either a grid (grid/variants) or a search, not both")
    if spec.race and spec.search:
        problems.append("race: races a grid's configurations over seeds; a search runs each trial once (race the "
                        "best trials as a grid study)")
    elif spec.race and len(spec.seeds) != spec.race.max_seeds:
        problems.append(f"seeds: {abbreviated(spec.seeds)}: a race takes its seeds from this list in order; list "
                        f"race.max_seeds={spec.race.max_seeds} seeds, or leave seeds out (0 .. "
                        f"{spec.race.max_seeds - 1})")
    if spec.search and not spec.race and len(spec.seeds) > 1:
        problems.append(f"seeds: {spec.seeds}: a search runs each trial with one seed; list one "
                        "(re-run the best configuration over seeds as a grid study)")
    return problems, bad_choices


def layout_problems(spec: StudySpec) -> list[str]:
    """Report rows and columns must be settings of the study, and name all of them if rows are given."""
    allowed, report = settings_keys(spec), spec.report
    problems = [f"report.{part}: {key!r}: not a setting of this study; settings: {allowed}"
                for part in ("rows", "columns") for key in getattr(report, part) or [] if key not in allowed]
    if report.rows is not None and (left := [k for k in allowed if k not in report.rows + report.columns]):
        problems.append(f"report.rows: {report.rows}: with report.columns {report.columns} it leaves out {left}; "
                        "configurations differing only there would share a cell (omit rows to get the rest)")
    return problems


def _strategy_key(cfg: Config) -> str:
    """What building a configuration's masking strategy depends on: its data set and its masking section."""
    return json.dumps([cfg.data.root, cfg.masking], sort_keys=True, default=repr)


def _expand(study: Study, skip: set[tuple[str, str]]) -> tuple[list[str], list[Fitted]]:
    """Fill ``study.runs`` with every (variant x grid point) x seed, each configuration composed and fitted
    to its data set (the first round); returns the problems, and for the second round one configuration per
    distinct masking strategy."""
    spec, problems, done = study.spec, [], {}
    variants = list(spec.variants.items()) or [(None, {})]
    count = len(variants) * math.prod(len(values) for values in spec.grid.values())
    if count > spec.max_configurations:
        sizes = [f"{len(variants)} variants"] * bool(spec.variants) + [f"{len(v)} {k}" for k, v in spec.grid.items()]
        return [f"grid: {count:,} configurations ({' x '.join(sizes)}), more than max_configurations="
                f"{spec.max_configurations:,}; shrink the grid, or raise max_configurations to expand them all"], []
    first: dict[str, str] = {}  # config hash -> the label of the configuration that has it
    points = itertools.product(variants, itertools.product(*spec.grid.values()))
    # a bar for a large grid, on a terminal only (tqdm disables itself on None elsewhere)
    for (variant, chosen), point in tqdm(points, total=count, desc=f"{spec.name}: checking configurations",
                                         unit="config", disable=count < PROGRESS_FROM or None, file=sys.stderr):
        axes = dict(zip(spec.grid, point))
        overrides = {**spec.base, **chosen, **axes}
        settings = ({"variant": variant} if variant else {}) | axes
        origin = {**{k: (f"base.{k}", v) for k, v in spec.base.items()},
                  **{k: (f"variants.{variant}.{k}", v) for k, v in chosen.items()},
                  **{k: (f"grid.{k}", v) for k, v in axes.items()}}
        if _uses(overrides, skip):
            continue
        try:
            cfg = fitted(overrides)
        except (ConfigError, DataFormatError) as e:
            problems.append(_attribute(str(e), origin, settings))
            continue
        runs = study.runs_of(cfg, overrides, spec.seeds, settings)
        if (same := first.get(runs[0].config_hash)) is not None:
            problems.append(f"configuration {runs[0].label}: the same configuration as {same} (equal resolved "
                            "configs: the same runs); remove one")
            continue
        first[runs[0].config_hash] = runs[0].label
        study.runs += runs
        done.setdefault(_strategy_key(cfg), (cfg, origin, settings))
    if spec.race and len(first) == 1:
        problems.append(f"race: the study has one configuration ({next(iter(first.values()))}); a race compares "
                        "two or more (add grid values or variants)")
    if spec.report.baseline and study.runs and not any(matches(r, spec.report.baseline) for r in study.runs):
        choices = sorted({r.label for r in study.runs})
        problems.append(f"report.baseline: {abbreviated(spec.report.baseline)} matches no configuration; "
                        f"configurations: {choices}")
    return problems, list(done.values())


def _check_search(study: Study, skip: set[tuple[str, str]]) -> tuple[list[str], list[Fitted]]:
    """A search's runs are not known up front: compose base alone and every corner of each parameter."""
    spec, problems, done = study.spec, [], []
    corners: list[tuple[str, dict[str, Any]]] = [("base", {})]
    for key, p in spec.search.params.items():
        values = p.choices if p.type == "categorical" else [_cast(p, p.low), _cast(p, p.high)]
        corners += [(f"search.params.{key}", {key: v}) for v in values]
    for where, extra in corners:
        if _uses({**spec.base, **extra}, skip):
            continue
        origin = {k: (f"base.{k}", v) for k, v in spec.base.items()} | {k: (where, v) for k, v in extra.items()}
        try:
            done.append((fitted({**spec.base, **extra}), origin, extra))
        except (ConfigError, DataFormatError) as e:
            problems.append(_attribute(str(e), origin, extra))
    return problems, done


def _check_strategies(configs: list[Fitted]) -> list[str]:
    """The second round: build each configuration's masking strategy (this imports torch)."""
    from model.run_setup import check

    problems = []
    for cfg, origin, settings in configs:
        try:
            check(cfg)
        except (ConfigError, DataFormatError) as e:
            problems.append(_attribute(str(e), origin, settings))
    return problems


def _check_metrics(spec: StudySpec) -> list[str]:
    """Objectives and report columns must be metrics the runs log; a pruner's, one logged while training."""
    from model.mask_stats import MaskStats
    from model.tasks import eval_metric, metric_names
    from model.train import logged_metrics

    training, final = None, None  # what the runs log on every data set of the study
    for root in data_roots(spec):
        try:
            data = DatasetSpec.load(root)
        except DataFormatError:  # reported where the configuration is composed
            continue
        t = set(logged_metrics(data.modalities))
        f = {eval_metric(m) for m in metric_names(data.modalities, data.generator is not None)}
        training, final = (t, f) if training is None else (training & t, final & f)
    if training is None:
        return []
    train_only = sorted(m for m in training if not m.startswith(MaskStats.PREFIX))
    wanted = [(f"report.metrics.{i}", m) for i, m in enumerate(spec.report.metrics)
              if "metrics" in spec.report.model_fields_set]  # default columns a study cannot fill stay empty
    wanted += [("search.metric", spec.search.metric)] if spec.search else []
    wanted += [("race.metric", spec.race.metric)] if spec.race else []
    problems = []
    for where, metric in wanted:
        if metric in final and not spec.evaluate:
            problems.append(f"{where}: {metric!r} needs evaluate: true")
        elif metric not in final | training:
            problems.append(f"{where}: {metric!r}: no run logs it; allowed: {', '.join(sorted(final) + train_only)}, "
                            "or a masks/ statistic such as masks/rgb/input_mean")
    pruned_by = spec.search.intermediate if spec.search and spec.search.pruner != "none" else None
    if pruned_by is not None and pruned_by not in training:
        problems.append(f"search.intermediate: {pruned_by!r}: not logged during training, so the "
                        f"pruner cannot compare trials by it; allowed: {', '.join(train_only)}, or a masks/ statistic")
    return problems


def data_roots(spec: StudySpec) -> set[str]:
    """Every data set the study's runs train on: the ``data.root`` values it names, and the default's
    unless ``base`` sets one."""
    named = {v for _, key, values in _sources(spec) if key.lstrip("+~") == "data.root" for v in values}
    return named | (set() if "data.root" in spec.base else {DataConfig.root})


def _uses(overrides: dict[str, Any], pairs: set[tuple[str, str]]) -> bool:
    """Whether any override is one of the (key, repr of value) pairs."""
    return any((k, repr(v)) in pairs for k, v in overrides.items())


def _cast(param: SearchParam, value: float) -> float | int:
    return int(value) if param.type == "int" else value


def _attribute(message: str, origin: dict[str, tuple[str, Any]], settings: dict[str, Any]) -> str:
    """Name the study key a config error comes from: the override key the message names most of (the
    whole key, or its leading part such as ``masking.input_alphas`` of ``masking.input_alphas.rgb``),
    else the override whose (string) value it mentions, such as a missing data folder."""
    named = {k: n for k in origin if (n := _named_parts(k, message))}
    if not named:
        named = {k: len(k) for k, (_, v) in origin.items() if isinstance(v, str) and len(v) > 2 and v in message}
    if named:
        return f"{origin[max(named, key=named.get)][0]}: {message}"
    where = " ".join(f"{k}={v}" for k, v in settings.items())
    return f"{'configuration ' + where if where else 'base'}: {message}"


def _named_parts(key: str, message: str) -> int:
    """How many leading parts of a dotted key the message names: all of them, or at least two."""
    parts = key.lstrip("+~").split(".")
    return next((n for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in message
                 and (n == len(parts) or n >= 2)), 0)
