"""The study file's schema: every key, its type, default, range and meaning (pydantic, strict: no unknown keys,
no silent conversions). The key reference in docs/studies.md is generated from it (``ablate/study_doc.py``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from ablate import store
from ablate.executors import DEFAULT_KIND, EXECUTORS
from ablate.executors.base import COMMON_KEYS
from ablate.metric_names import current, mlflow_safe

Positive = Annotated[int, Field(ge=1)]
NonNegative = Annotated[int, Field(ge=0)]
Seed = Annotated[int, Field(ge=0, lt=2**32)]  # numpy's seed range
ExecutorName = Literal[tuple(EXECUTORS)]  # the kinds ablate/executors/ defines


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


def _with_direction(metrics: list[str]) -> list[str]:
    """Metric names MLflow keeps as they are, each with a known direction (lower or higher is better)."""
    for m in metrics:
        _metric(m)
    from model.tasks import METRICS, direction  # the scorers' scipy only where metrics are named

    unknown = [m for m in metrics if direction(m) is None]
    if unknown:
        known = ", ".join(f"{m!r} ({d})" for m, d in METRICS.items())
        raise ValueError(f"{unknown}: no known direction (lower or higher is better); a metric name must "
                         f"contain one of model/tasks.py's metrics: {known}")
    return metrics


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
    trials: Positive = Field(description="trials in all (complete, pruned or failed), across restarts; a trial "
                             "whose job was cancelled is asked again, not counted")
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


Spending = Literal["pocock", "obrien_fleming"]  # alpha spending functions (ablate/race_rule.py)
RaceTest = Literal["paired", "pooled"]  # a race's pairwise tests (ablate/race_rule.py)


class RaceSpec(Schema):
    """Racing: configurations run in rounds on shared seeds; one significantly worse than another gets no more
    seeds (``ablate/race_rule.py``: alpha spending across looks, Holm over pairs within a look)."""

    metric: str = Field(description="what the race compares: a metric every run logs (eval/...: at its end, needs "
                        "evaluate: true); better is lower or higher as model/tasks.py says")
    min_seeds: int = Field(3, ge=2, description="seeds every configuration runs before the first look")
    max_seeds: int = Field(10, ge=2, description="seeds a configuration runs at most (the last look); the race "
                           "takes its seeds from the study's seeds in order (default 0 .. max_seeds - 1)")
    every: Positive = Field(1, description="seeds added per round after the first look")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="family-wise error rate over the whole race: the chance "
                         "that any configuration as good as the best is eliminated")
    spending: Spending = Field(
        "pocock", description="how alpha is spread over the looks: pocock spends early (a clearly worse "
        "configuration goes at the first look), obrien_fleming keeps most for the last")
    test: RaceTest = Field(
        "paired", description="paired: a t-test per pair over its shared seeds (holds when the configurations' "
        "noise differs); pooled: one residual variance over all configurations racing (more power at few seeds, "
        "wrong when some are noisier than others)")
    margin: float = Field(0.0, ge=0, description="practical equivalence, in the metric's units: a difference below "
                          "it is a tie (never eliminates), and the race ends once every other configuration is "
                          "shown within it of the best")

    @field_validator("metric")
    @classmethod
    def _metric_direction(cls, metric: str) -> str:
        return _with_direction([metric])[0]

    @model_validator(mode="after")
    def _seed_range(self) -> RaceSpec:
        if self.min_seeds > self.max_seeds:
            raise ValueError(f"min_seeds={self.min_seeds} is above max_seeds={self.max_seeds}")
        return self


class _ExecutorSection(Schema):
    """Where runs go: ``kind``, the keys every kind reads, and each kind's own (``ablate/executors/``). A kind
    ignores the keys of another, so a study can switch kinds and keep them."""

    @model_validator(mode="after")
    def _kind_can_run_it(self) -> _ExecutorSection:
        EXECUTORS[self.kind].check(self.model_dump())
        return self


def _executor_keys() -> dict[str, tuple[Any, Any]]:
    """``kind``, then the common keys, then each kind's, in the registry's order; a key belongs to one kind."""
    keys = {"kind": (ExecutorName, Field(DEFAULT_KIND, description="; ".join(f"{k}: {e.summary}"
                                                                         for k, e in EXECUTORS.items()))),
            **COMMON_KEYS}
    for kind in EXECUTORS.values():
        if taken := sorted(keys.keys() & kind.keys.keys()):
            raise TypeError(f"executor kind {kind.kind!r} declares {taken}, which are already executor keys")
        keys |= kind.keys
    return keys


ExecutorSpec = create_model("ExecutorSpec", __base__=_ExecutorSection, __doc__=_ExecutorSection.__doc__,
                            **_executor_keys())


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
        return _with_direction(metrics)

    @field_validator("curves")
    @classmethod
    def _curve_names(cls, curves: list[str]) -> list[str]:
        return [_metric(m) for m in curves]

    @model_validator(mode="after")
    def _rows_and_columns_apart(self) -> ReportSpec:
        if both := sorted(set(self.rows or []) & set(self.columns)):
            raise ValueError(f"rows and columns share {both}; a settings key goes in one of them")
        return self


class TrackingSpec(Schema):
    """Where the study's MLflow records and a search's Optuna trials go (``ablate/store.py``). Credentials come
    from the environment, never from this file."""

    uri: str | None = Field(None, description="default: the study's SQLite file studies/<name>/mlflow.db (one "
                            "machine); http(s)://host:port: an MLflow server (ablate server; for a cluster); "
                            "postgresql://user@host:port/db: PostgreSQL used directly. No password: PGPASSWORD or "
                            "PGPASSFILE, MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
    artifacts: str | None = Field(None, description="an absolute path every node sees (a shared file system) for "
                                  "the experiment's artifacts; default: beside the SQLite file, the server's own "
                                  "(served), or studies/<name>/artifacts for postgresql://")
    database: str | None = Field(None, description="postgresql://user@host:port/db: where a search keeps its Optuna "
                                 "trials when uri is a server (default: uri itself when it is postgresql://; the "
                                 "journal file studies/<name>/optuna.journal for SQLite)")
    request_timeout: float = Field(10.0, gt=0, le=600, description="seconds one tracking request may block a "
                                   "training step; what is not sent waits in the run folder and goes when the "
                                   "store answers again")

    @field_validator("uri", "database")
    @classmethod
    def _uri(cls, uri: str | None) -> str | None:
        if uri is None:
            return uri
        try:
            store_kind = store.kind(uri)
        except store.StoreError as e:
            raise ValueError(str(e)) from None
        if store_kind == "sqlite":
            raise ValueError("a SQLite store is the study's own file: leave uri unset")
        if store.has_password(uri):
            raise ValueError("the URI holds a password: leave it out and set PGPASSWORD (or PGPASSFILE) or "
                             "MLFLOW_TRACKING_PASSWORD in the environment")
        return uri

    @field_validator("database")
    @classmethod
    def _postgresql(cls, uri: str | None) -> str | None:
        if uri is not None and store.kind(uri) != "database":
            raise ValueError("the search's database is a postgresql:// URI")
        return uri

    @field_validator("artifacts")
    @classmethod
    def _absolute(cls, path: str | None) -> str | None:
        if path is not None and not path.startswith("/"):
            raise ValueError(f"{path!r}: an absolute path that every node sees")
        return path


class StudySpec(Schema):
    """The study file."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100, description="the study folder is "
                      "studies/<name>/ (next to the file): letters, digits, _ . -")
    description: str = Field("", description="free text (the MLflow parent run's note)")
    base: dict[str, Any] = Field(default_factory=dict, description="config key -> value for every run: any key of "
                                 "model/conf/ or a group choice (model: tiny, nano or base; masking: a strategy)")
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1, description="every configuration runs once "
                              "per seed (distinct; a search takes one; a race takes them in order, race.max_seeds "
                              "of them)")
    grid: dict[str, Annotated[list[Any], Field(min_length=1)]] = Field(
        default_factory=dict, description="config key -> list of values: every combination is a configuration")
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict, description="name -> overrides: named "
                                                "configurations, each crossed with the grid, not with each other")
    search: SearchSpec | None = Field(None, description="an Optuna search instead of grid/variants")
    race: RaceSpec | None = Field(None, description="race the configurations: rounds of seeds, dropping what is "
                                  "significantly worse, until one is left, the rest tie, or max_seeds")
    max_configurations: Positive = Field(10_000, description="a grid of more configurations (variants x grid "
                                         "points, before seeds) is refused before it is expanded; raise it to "
                                         "expand a larger one")
    evaluate: bool = Field(True, description="evaluate every run at its end (eval/... metrics)")
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec, description="where runs go")
    report: ReportSpec = Field(default_factory=ReportSpec, description="the comparison printed at the end")
    tracking: TrackingSpec = Field(default_factory=TrackingSpec, description="where MLflow records the study "
                                   "and a search keeps its trials")

    @model_validator(mode="after")
    def _race_seeds(self) -> StudySpec:
        """A race without a seeds list takes 0 .. max_seeds - 1."""
        if self.race is not None and "seeds" not in self.model_fields_set:
            self.seeds = list(range(self.race.max_seeds))
        return self
