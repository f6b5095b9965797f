"""The study file's schema: every key, its type, default, range and meaning (pydantic, strict: no unknown keys,
no silent conversions). The key reference in docs/studies.md is generated from it (``ablate/study_doc.py``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ablate.executors import EXECUTORS
from ablate.metric_names import current, mlflow_safe

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


SIGNAL_SHARE = 0.5  # of a SLURM job's time limit that executor.signal_delay_s may take at most


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
    max_timeouts: NonNegative = Field(3, description="SLURM requeues of a job at its time limit before it fails "
                                      "(submitit's max_num_timeout); the failed run is then retried (max_retries)")
    setup: list[str] = Field(default_factory=list, description="shell lines the SLURM job runs before python (e.g. "
                             "module load)")
    additional: dict[str, Any] = Field(default_factory=dict, description="any other sbatch option: name -> string, "
                                       "number or boolean (e.g. qos: normal)")

    @model_validator(mode="after")
    def _time_to_train(self) -> ExecutorSpec:
        """SLURM signals a job ``signal_delay_s`` before its limit and the run is requeued: a delay near the
        limit leaves each job seconds to train, and the run never finishes (the requeues run out)."""
        limit_s = self.timeout_min * 60
        if self.kind == "slurm" and self.signal_delay_s > SIGNAL_SHARE * limit_s:
            raise ValueError(f"signal_delay_s={self.signal_delay_s} leaves {max(0, limit_s - self.signal_delay_s)} s "
                             f"of timeout_min={self.timeout_min} ({limit_s} s) to train before each requeue; give "
                             f"at most {SIGNAL_SHARE:.0%} of the limit ({SIGNAL_SHARE * limit_s:.0f} s) or a longer "
                             "timeout_min")
        return self

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
