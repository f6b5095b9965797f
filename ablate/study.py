"""A study: one YAML file, validated as a whole, expanded into runs keyed by what they train.

A run is ``(resolved config, seed)``. Its key, ``<config hash>-s<seed>``, names its folder
``<study dir>/runs/<key>/`` and tags its MLflow run, so a resubmitted study finds its runs again
whatever job ids the scheduler hands out. The hash covers the resolved config except the seed
and the bookkeeping the study fills in itself (``BOOKKEEPING``).

The study folder, ``studies/<name>/`` next to the YAML, holds ``mlflow.db`` (the study's MLflow
store), ``runs/``, ``submitit/`` (job logs) and ``optuna.journal`` (a search's trials).

A file is checked in two rounds, each reporting all it finds. The first needs no torch, so a refusal
comes back in well under a second: the file itself (size, UTF-8, YAML, aliases written out), the
schema, the keys, the grid's size, and every configuration composed and fitted to its data set
(``model/fit.py``: every array checked), duplicates included. Only a file without such problems gets
the second round: every configuration's masking strategy built (torch), and the metrics it names.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import itertools
import json
import math
import os
import re
import reprlib
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from tqdm import tqdm

from ablate.executors import EXECUTORS
from ablate.metric_names import current, mlflow_safe
from model.config import CONF_DIR, Config, ConfigError, DataConfig, compose, group_options, to_dict
from model.dataset import DataFormatError, DatasetSpec
from model.fit import fit

# Config keys the study sets itself; the message says what to use instead.
BOOKKEEPING = {
    "train.seed": "list seeds under 'seeds'",
    "train.out_dir": "runs live in the study folder",
    "train.threads": "use executor.threads_per_run",
    "tracking": "every run is tracked in the study's own MLflow store",
}
MAX_FILE_BYTES = 1_000_000
MAX_VALUES = 1_000_000  # values in the file with every YAML alias written out (an alias bomb has billions)
MAX_LINE = 4000  # characters of one problem line: a value is never printed whole if it is long
PROGRESS_FROM = 200  # configurations: more, and their checking shows a progress bar
Positive = Annotated[int, Field(ge=1)]
NonNegative = Annotated[int, Field(ge=0)]
Seed = Annotated[int, Field(ge=0, lt=2**32)]  # numpy's seed range
ExecutorName = Literal[tuple(EXECUTORS)]  # the kinds ablate/executors.py defines


class StudyError(ValueError):
    """A study that cannot run; the message names the file, the key, the value and what is allowed."""


class Schema(BaseModel):
    """Strict: no unknown keys, no silent "3" -> 3 conversions."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _metric(name: str) -> str:
    """A metric name must be one MLflow stores as it is (``ablate/metric_names.py``)."""
    if not mlflow_safe(name):
        renamed = current(name)
        hint = f"write {renamed!r}" if mlflow_safe(renamed) else "use letters, digits and _ - . : /"
        raise ValueError(f"{name!r}: MLflow would store this metric under another name; {hint}")
    return name


class SearchParam(Schema):
    """How one config key is drawn for a trial."""

    type: Literal["float", "int", "categorical"] = Field(
        description="float and int: from [low, high]; categorical: one of choices")
    low: float | None = Field(None, description="lower bound (float, int)")
    high: float | None = Field(None, description="upper bound, included (float, int); above low")
    log: bool = Field(False, description="draw on a log scale (needs low > 0 and no step)")
    step: float | None = Field(None, description="draw on a grid of this step from low (int: default 1)")
    choices: list[Any] | None = Field(None, description="the values of a categorical parameter: strings, numbers, "
                                      "booleans or null")

    @model_validator(mode="after")
    def _consistent(self) -> SearchParam:
        if self.type == "categorical":
            if not self.choices or self.low is not None or self.high is not None:
                raise ValueError("a categorical parameter needs a non-empty 'choices' list and no low/high")
            if bad := [c for c in self.choices if not (c is None or isinstance(c, (str, int, float, bool)))]:
                raise ValueError(f"choices {bad}: a choice is a string, a number, a boolean or null")
            return self
        if self.low is None or self.high is None or self.choices is not None:
            raise ValueError(f"a {self.type} parameter needs 'low' and 'high' (and no 'choices')")
        if not self.low < self.high:
            raise ValueError(f"low={self.low} must be below high={self.high}")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError("log=true needs low > 0 and no step")
        if self.type == "int" and not all(float(v).is_integer() for v in (self.low, self.high, self.step or 1)):
            raise ValueError("an int parameter needs integer low, high and step")
        return self


class SearchSpec(Schema):
    """Optuna search over config keys; each trial is one run with the study's seed."""

    params: dict[str, SearchParam] = Field(min_length=1, description="config key -> how a trial draws it")
    trials: Positive = Field(description="trials in all (complete, pruned or failed), across restarts")
    metric: str = Field("eval/loss/mean", description="the objective: a metric every run logs (eval/...: at its end, "
                        "needs evaluate: true)")
    direction: Literal["minimize", "maximize"] = Field("minimize", description="of metric")
    sampler: Literal["tpe", "random"] = Field("tpe", description="Optuna's TPESampler or RandomSampler")
    pruner: Literal["none", "median"] = Field("none", description="median: stop a trial whose intermediate is worse "
                                              "than the median of finished trials at the same step")
    intermediate: str = Field("train/loss", description="what the pruner compares at equal steps: a metric logged "
                              "during training (train/... or masks/...)")
    prune_after_trials: NonNegative = Field(5, description="finished trials before the pruner stops any")
    prune_after_step: NonNegative = Field(0, description="training step before which no trial is pruned")
    seed: Seed = Field(0, description="the sampler's seed")

    @field_validator("metric", "intermediate")
    @classmethod
    def _names(cls, name: str) -> str:
        return _metric(name)

    @model_validator(mode="after")
    def _pruner_direction(self) -> SearchSpec:
        if self.pruner != "none" and self.direction == "maximize" and self.intermediate.startswith("train/loss"):
            raise ValueError(f"pruner={self.pruner!r} compares 'intermediate' in the study's direction (maximize); "
                             f"{self.intermediate!r} is a loss: set an intermediate metric that grows")
        return self


class ExecutorSpec(Schema):
    """Where runs go. The SLURM keys are submitit's; local and debug ignore them (not gpus/tasks_per_node)."""

    kind: ExecutorName = Field("local", description="; ".join(f"{k}: {e.summary}" for k, e in EXECUTORS.items()))
    max_parallel: Positive = Field(1, description="runs at once (local processes, search trials; SLURM: the array's "
                                   "default parallelism)")
    threads_per_run: NonNegative = Field(0, description="torch CPU threads per run (0: torch's default)")
    max_retries: NonNegative = Field(2, description="relaunches of a failed run")
    timeout_min: Positive = Field(60, description="a run's time limit; at the limit it is checkpointed and requeued")
    partition: str | None = Field(None, description="SLURM partition (sbatch --partition)")
    account: str | None = Field(None, description="SLURM account (sbatch --account)")
    gpus_per_node: NonNegative = Field(0, description="GPUs per run; the run is data-parallel over them")
    tasks_per_node: Positive | None = Field(None, description="processes per run (default: one per GPU, at least "
                                            "one)")
    cpus_per_task: Positive | None = Field(None, description="SLURM CPUs per process (default: threads_per_run, at "
                                           "least 1)")
    mem_gb: float | None = Field(None, gt=0, description="SLURM memory per node")
    array_parallelism: Positive | None = Field(None, description="SLURM array tasks at once (default: max_parallel)")
    signal_delay_s: NonNegative = Field(120, description="SLURM sends USR2 this long before the time limit: the run "
                                        "checkpoints and is requeued")
    setup: list[str] = Field(default_factory=list, description="shell lines the SLURM job runs before python (e.g. "
                             "module load)")
    additional: dict[str, Any] = Field(default_factory=dict, description="any other sbatch option: name -> string, "
                                       "number or boolean (e.g. qos: normal)")

    @field_validator("additional")
    @classmethod
    def _sbatch_values(cls, options: dict[str, Any]) -> dict[str, Any]:
        for name, value in options.items():
            if not isinstance(value, (str, int, float, bool)):
                raise ValueError(f"{name}: {value!r}: an sbatch option takes a string, a number or a boolean")
        return options


class ReportSpec(Schema):
    """What ``ablate report`` compares and how its table is laid out (see ``ablate/report.py``)."""

    baseline: dict[str, Any] | None = Field(None, description="the overrides (or {variant: NAME}) that pick the "
                                            "baseline configuration; it must match one")
    metrics: list[str] = Field(default_factory=lambda: ["eval/loss/mean", "eval/acc/mean"], min_length=1,
                               description="columns: metrics every run logs (eval/...: needs evaluate: true); "
                               "each must have a direction (model/tasks.py)")
    rows: list[str] | None = Field(None, description="settings keys that form the rows (default: those not in "
                                   "columns)")
    columns: list[str] = Field(default_factory=list, description="settings keys that form grouped column headers")
    precision: int = Field(3, ge=0, le=8, description="digits after the decimal point")
    caption: str | None = Field(None, description="table caption (default: the study's description)")
    label: str | None = Field(None, description="LaTeX label (default: tab:<study name>)")
    correction: Literal["holm", "bh"] = Field("holm", description="multiple-comparison correction across the "
                                              "table's tests: Holm (family-wise) or Benjamini-Hochberg (FDR)")
    alpha: float = Field(default=0.05, gt=0, lt=1, description="significance level after correction")
    curves: list[str] = Field(default_factory=lambda: ["train/loss"], description="per-step metrics drawn as "
                              "training curves")

    @field_validator("metrics")
    @classmethod
    def _known_direction(cls, metrics: list[str]) -> list[str]:
        for m in metrics:
            _metric(m)
        from model.tasks import METRICS, direction  # the scorers' scipy only where metrics are named

        unknown = [m for m in metrics if direction(m) is None]
        if unknown:
            known = ", ".join(f"{m!r} ({d})" for m, d in METRICS.items())
            raise ValueError(f"{unknown}: no known direction (lower or higher is better); a metric name must "
                             f"contain one of model/tasks.py's metrics: {known}")
        return metrics

    @field_validator("curves")
    @classmethod
    def _curve_names(cls, curves: list[str]) -> list[str]:
        return [_metric(m) for m in curves]

    @model_validator(mode="after")
    def _rows_and_columns_apart(self) -> ReportSpec:
        if both := sorted(set(self.rows or []) & set(self.columns)):
            raise ValueError(f"rows and columns share {both}; a settings key goes in one of them")
        return self


class StudySpec(Schema):
    """The study file."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100, description="the study folder is "
                      "studies/<name>/ (next to the file): letters, digits, _ . -")
    description: str = Field("", description="free text (the MLflow parent run's note)")
    base: dict[str, Any] = Field(default_factory=dict, description="config key -> value for every run: any key of "
                                 "model/conf/ or a group choice (model: tiny, nano or base; masking: a strategy)")
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1, description="every configuration runs once "
                              "per seed (distinct; a search takes one)")
    grid: dict[str, Annotated[list[Any], Field(min_length=1)]] = Field(
        default_factory=dict, description="config key -> list of values: every combination is a configuration")
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict, description="name -> overrides: named "
                                                "configurations, each crossed with the grid, not with each other")
    search: SearchSpec | None = Field(None, description="an Optuna search instead of grid/variants")
    max_configurations: Positive = Field(10_000, description="a grid of more configurations (variants x grid "
                                         "points, before seeds) is refused before it is expanded; raise it to "
                                         "expand a larger one")
    evaluate: bool = Field(True, description="evaluate every run at its end (eval/... metrics)")
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec, description="where runs go")
    report: ReportSpec = Field(default_factory=ReportSpec, description="the comparison printed at the end")


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
        return self.config["masking"]["name"]

    @property
    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.settings.items()) or self.config_hash

    def progress(self) -> tuple[int, float | None]:
        """Last logged step and training loss, from the tail of the run folder's history.jsonl."""
        history = self.out_dir / "history.jsonl"
        try:
            with history.open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))  # a long run's history is long; its end is enough
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            return 0, None
        for line in reversed(lines):  # the last complete line (a write may be under way)
            try:
                last = json.loads(line)
                return int(last["step"]), last.get("train/loss")
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):  # not a whole history line
                continue
        return 0, None


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
    def store(self) -> str:
        return f"sqlite:///{self.dir / 'mlflow.db'}"

    def make_run(self, overrides: dict[str, Any], seed: int, settings: dict[str, Any]) -> Run:
        """Compose and check one run; raises ``ConfigError``/``DataFormatError``."""
        return self.make_runs(overrides, [seed], settings)[0]

    def make_runs(self, overrides: dict[str, Any], seeds: list[int], settings: dict[str, Any]) -> list[Run]:
        """One config composed and checked once (its masking strategy built), then one run per seed."""
        from model.setup import check

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
            config["train"].update(seed=seed, out_dir=str(self.dir / "runs" / key),
                                   threads=self.spec.executor.threads_per_run)
            config["tracking"].update(uri=self.store, experiment=self.name, run_name=key, enabled=True)
            runs.append(Run(key, digest, seed, settings, dict(overrides), config))
        return runs


def fitted(overrides: dict[str, Any]) -> Config:
    """The config of a study's overrides, composed and fitted to its data set (``model/fit.py``), torch-free;
    raises ``ConfigError``/``DataFormatError``."""
    cfg = compose([override(k, v) for k, v in overrides.items()])
    fit(cfg)
    return cfg


def config_hash(config: dict) -> str:
    """12 hex digits of the resolved config, seed and bookkeeping excluded."""
    identity = copy.deepcopy(config)
    for dotted in BOOKKEEPING:
        section, _, leaf = dotted.partition(".")
        if leaf:
            identity[section].pop(leaf, None)
        else:
            identity.pop(section, None)
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


_PLAIN = re.compile(r"[A-Za-z_/][\w\-./]*")


def override(key: str, value: Any) -> str:
    """A Hydra override ``key=value`` for a YAML value (strings quoted unless plainly a word or path).

    A masking parameter is forced (``++``): added when the chosen preset lacks it, so the strategy
    itself says which parameters it takes.
    """
    return f"{'++' if key.startswith('masking.') else ''}{key}={_hydra_value(value)}"


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


class _Loader(yaml.SafeLoader):
    """Safe YAML that also reads ``1e-3`` as a float (PyYAML's YAML 1.1 resolver wants ``1.0e-3``) and
    refuses a key given twice in one mapping (PyYAML would silently keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, typing.Hashable) and key in first:
                raise yaml.constructor.ConstructorError(
                    problem=f"key {key!r} given twice (first on line {first[key] + 1}); give each key once",
                    problem_mark=key_node.start_mark)
            if isinstance(key, typing.Hashable):
                first[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def load_study(path: str | Path, expand: bool = True) -> Study:
    """Read, validate and expand a study file; all problems of a round (module docstring) in one ``StudyError``.

    ``expand=False`` reads the file and its schema only (no configuration composed, no data set read): enough
    for what needs only the study's name and folder, such as ``ablate ui``."""
    path = Path(path)
    where = str(path)
    raw = _read(path)
    if not isinstance(raw, dict):
        raise StudyError(f"{where}: a study file is a mapping with keys {sorted(StudySpec.model_fields)}")
    problems: list[str] = []
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as e:
        problems = [_describe(err) for err in e.errors()]
        # Check the rest too: the sections without errors, with defaults for the others.
        broken = {err["loc"][0] for err in e.errors()}
        try:
            spec = StudySpec.model_validate({k: v for k, v in raw.items() if k not in broken})
        except ValidationError:
            raise _error(where, problems) from None
    study = Study(spec, path)
    if expand:
        found, bad_choices = _check_keys(spec)
        problems += found + layout_problems(spec)
        expanded, fitted_configs = (_expand if spec.search is None else _check_search)(study, bad_choices)
        problems += expanded
        if not problems:  # the second round
            problems += _check_strategies(fitted_configs) + _check_metrics(spec)
    if problems:
        raise _error(where, problems)
    return study


def _read(path: Path) -> Any:
    """The file's YAML, bounded: at most ``MAX_FILE_BYTES``, UTF-8, at most ``MAX_VALUES`` values once every
    alias is written out."""
    where = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise StudyError(f"{where}: {size:,} bytes; a study file is at most {MAX_FILE_BYTES:,} bytes")
        data = path.read_bytes()
    except OSError as e:
        raise StudyError(f"{where}: cannot read the study file ({e.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise StudyError(f"{where}: line {line}: byte 0x{data[e.start]:02x} is not UTF-8 text; a study file is "
                         "UTF-8") from None
    try:
        raw = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        raise StudyError(f"{where}: {_yaml_problem(e)}") from None
    except RecursionError:
        raise StudyError(f"{where}: nested too deeply to be a study") from None
    if _values(raw, MAX_VALUES) is None:
        raise StudyError(f"{where}: more than {MAX_VALUES:,} values once its YAML aliases (*name) are written out, "
                         "or an alias inside what it names; a study file repeats no large value")
    return raw


def _values(root: Any, limit: int) -> int | None:
    """How many values ``root`` holds with every alias written out (a list used twice counts twice); None if
    more than ``limit``, or if a value holds itself (``&a [*a]``). Counted once per distinct list or mapping."""
    sizes: dict[int, int] = {}  # id of a list or mapping -> its count
    active: set[int] = set()  # the lists and mappings being counted: met again inside themselves, a cycle
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if not isinstance(node, (list, dict)) or (not children_done and id(node) in sizes):
            continue
        children = [*node, *node.values()] if isinstance(node, dict) else node
        if children_done:
            active.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes.get(id(c), 1) for c in children)
            if sizes[id(node)] > limit:
                return None
        elif id(node) in active:
            return None
        else:
            active.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in children)
    return sizes.get(id(root), 1)


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = getattr(e, "problem", None) or str(e)
    if isinstance(e, yaml.constructor.ConstructorError) and "constructor for the tag" in problem:
        return (f"{at}{problem}: a study is plain YAML (mappings, lists, strings, numbers, booleans, null); "
                "tags that build Python objects are refused")
    return f"{at}not valid YAML: {problem}"


def _error(where: str, problems: list[str]) -> StudyError:
    unique = list(dict.fromkeys(problems))
    lines = "\n".join(f"  {where}: {_cut(p)}" for p in unique)
    return StudyError(f"{where} is not a valid study ({len(unique)} problem{'s' * (len(unique) > 1)}):\n{lines}")


def _describe(err: dict) -> str:
    """One pydantic error as 'key.path: value: what is wrong; what is allowed'."""
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown key; allowed keys here: {', '.join(_fields_at(err['loc'][:-1]))}"
    if err["type"] == "value_error":
        return f"{loc}: {err['msg'].removeprefix('Value error, ')}"
    if err["type"] == "missing":
        return f"{loc}: required key is missing"
    return f"{loc}: {shown(err['input'])}: {err['msg'].replace('Input should', 'should')}"


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 3, 8, 8, 80, 80


def shown(value: Any) -> str:
    """``repr`` of a value from a study file, abbreviated with ``...`` where long or deep."""
    return _REPR.repr(value)


def _cut(line: str) -> str:
    return line if len(line) <= MAX_LINE else f"{line[:MAX_LINE]}... ({len(line):,} characters in all)"


def _fields_at(loc: tuple) -> list[str]:
    """The keys allowed by the schema at a location (walking models, dicts, lists and optionals)."""
    node: Any = StudySpec
    for part in loc:
        node = node.model_fields[part].annotation if _is_model(node) else typing.get_args(node)[-1]
        node = _unwrap(node)
    return list(node.model_fields)


def _unwrap(node: Any) -> Any:
    if typing.get_origin(node) in (typing.Union, types.UnionType):
        return next((a for a in typing.get_args(node) if _is_model(a)), node)
    if typing.get_origin(node) is Annotated:
        return typing.get_args(node)[0]
    return node


def _is_model(node: Any) -> bool:
    return isinstance(node, type) and issubclass(node, BaseModel)


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
                problems.append(f"{path}: {shown(value)}: a {what} is a name, one of {', '.join(allowed)}{into}")
            elif value not in allowed:
                bad_choices.add((key, repr(value)))
                problems.append(f"{path}: {value!r}: unknown {what}; allowed: {', '.join(allowed)}")
    for axis, values in spec.grid.items():
        if len({repr(v) for v in values}) < len(values):
            twice = next(v for i, v in enumerate(values) if repr(v) in map(repr, values[:i]))
            problems.append(f"grid.{axis}: {shown(twice)} is given twice; give each value once")
    if len(set(spec.seeds)) < len(spec.seeds):
        problems.append(f"seeds: {shown(spec.seeds)}: seeds must be distinct")
    for name, overrides in spec.variants.items():
        if shared := sorted(set(overrides) & set(spec.grid)):
            problems.append(f"variants.{name}: sets {shared}, which are also grid axes; set each key in one place")
    if spec.search and (spec.grid or spec.variants):
        problems.append("search: a study is either a grid (grid/variants) or a search, not both")
    if spec.search and len(spec.seeds) > 1:
        problems.append(f"seeds: {spec.seeds}: a search runs each trial with one seed; list one "
                        "(re-run the best configuration over seeds as a grid study)")
    return problems, bad_choices


def settings_keys(spec: StudySpec) -> list[str]:
    """What sets a study's runs apart (``Run.settings``): the variant name, grid axes, or search parameters."""
    if spec.search:
        return list(spec.search.params)
    return ["variant"] * bool(spec.variants) + list(spec.grid)


def layout_problems(spec: StudySpec) -> list[str]:
    """Report rows and columns must be settings of the study, and name all of them if rows are given."""
    allowed, report = settings_keys(spec), spec.report
    problems = [f"report.{part}: {key!r}: not a setting of this study; settings: {allowed}"
                for part in ("rows", "columns") for key in getattr(report, part) or [] if key not in allowed]
    if report.rows is not None and (left := [k for k in allowed if k not in report.rows + report.columns]):
        problems.append(f"report.rows: {report.rows}: with report.columns {report.columns} it leaves out {left}; "
                        "configurations differing only there would share a cell (omit rows to get the rest)")
    return problems


Fitted = tuple[Config, dict[str, tuple[str, Any]], dict[str, Any]]  # a config, where its overrides come from, settings


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
    for (variant, chosen), point in tqdm(points, total=count, desc=f"{spec.name}: checking configurations",
                                         unit="config", disable=count < PROGRESS_FROM, file=sys.stderr):
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
    if spec.report.baseline and study.runs and not any(matches(r, spec.report.baseline) for r in study.runs):
        choices = sorted({r.label for r in study.runs})
        problems.append(f"report.baseline: {shown(spec.report.baseline)} matches no configuration; configurations: "
                        f"{choices}")
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
    from model.setup import check

    problems = []
    for cfg, origin, settings in configs:
        try:
            check(cfg)
        except (ConfigError, DataFormatError) as e:
            problems.append(_attribute(str(e), origin, settings))
    return problems


def _check_metrics(spec: StudySpec) -> list[str]:
    """Objectives and report columns must be metrics the runs log; a pruner's, one logged while training."""
    from model.setup import logged_metrics
    from model.tasks import metric_names

    training, final = None, None  # what the runs log on every data set of the study
    for root in _data_roots(spec):
        try:
            data = DatasetSpec.load(root)
        except DataFormatError:  # reported where the configuration is composed
            continue
        t = set(logged_metrics(data.modalities))
        f = {f"eval/{m}" for m in metric_names(data.modalities, data.generator is not None)}
        training, final = (t, f) if training is None else (training & t, final & f)
    if training is None:
        return []
    train_only = sorted(m for m in training if not m.startswith("masks/"))
    wanted = [(f"report.metrics.{i}", m) for i, m in enumerate(spec.report.metrics)
              if "metrics" in spec.report.model_fields_set]  # default columns a study cannot fill stay empty
    wanted += [("search.metric", spec.search.metric)] if spec.search else []
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


def _data_roots(spec: StudySpec) -> set[str]:
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


def matches(run: Run, selector: dict[str, Any]) -> bool:
    return all(run.overrides.get(k) == v or run.settings.get(k) == v for k, v in selector.items())


def find_study_file(name: str) -> Path:
    """A path, or the name of a study in ``studies/``."""
    path = Path(name)
    if path.exists():
        return path
    if not path.suffix and (Path("studies") / f"{name}.yaml").is_file():
        return Path("studies") / f"{name}.yaml"
    known = sorted(p.stem for p in Path("studies").glob("*.yaml"))
    raise StudyError(f"unknown study {name!r}: no such file, and no studies/{name}.yaml; "
                     f"studies in studies/: {', '.join(known) or 'none'}")
