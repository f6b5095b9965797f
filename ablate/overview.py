"""``ablate plan`` and ``ablate status``: one row per run, from the study file, its ledger and its run folders.

Plan's cost column is ``steps x batch x (input + target budget) / tokens per second`` (budgets are
the packed lengths, an upper bound on the tokens a step sees), where tokens per second is what
this study's runs of the same model logged, or else a few training steps timed here; finished
runs show their measured wall time instead. A speed timed here is kept in the user's cache
(``throughput_file``) for this machine, model shape, thread count, torch version and code
(``ablate/study_cache.py``), so only the first plan of a model times it.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import platform
import statistics
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tabulate import tabulate

from ablate import study_cache
from ablate.executors import EXECUTORS
from ablate.ledger import Ledger, Record, search_params
from ablate.outbox import unsent_count
from ablate.states import state
from ablate.study import Run, Study, fitted
from ablate.user_cache import user_cache
from model.config import ConfigError
from model.dataset import DataFormatError

if TYPE_CHECKING:
    from ablate.race_rule import RaceState

MEASURE_STEPS = 5


@dataclass
class Row:
    run: Run
    record: Record | None
    state: str


def rows(study: Study, strategies: bool = True) -> list[Row]:
    """Every run of a grid, or every run a search has launched so far (``strategies=False``: a trial's config
    composed and fitted, its masking strategy not built, so no torch)."""
    records = Ledger(study, create=False).records()
    runs = study.runs if study.spec.search is None else _search_runs(study, records, strategies)
    return [Row(run, records.get(run.key), state(records.get(run.key))) for run in runs]


def _search_runs(study: Study, records: dict[str, Record], strategies: bool) -> list[Run]:
    runs, seed = [], study.spec.seeds[0]
    for record in records.values():
        if (params := search_params(record)) is None:
            continue
        overrides = {**study.spec.base, **params}
        try:
            runs += (study.make_runs(overrides, [seed], params) if strategies
                     else study.runs_of(fitted(overrides), overrides, [seed], params))
        except (ConfigError, DataFormatError):  # from an earlier version of the study file
            continue
    return runs


def _axes(table: list[Row]) -> list[str]:
    return list(dict.fromkeys(k for row in table for k in row.run.settings))


def plan_table(study: Study) -> str:
    table = rows(study)
    speeds = _throughputs(study, table)
    axes = _axes(table)
    body, remaining, longest, max_retries = [], 0.0, 0.0, study.spec.executor.max_retries
    race = _race_state(study, table)
    raced = _raced(study, table, race) if race else {}
    for row in table:
        seconds = row.record.seconds if row.state == "done" and row.record else None
        if seconds is not None:
            cost = f"{_duration(seconds)} (measured)"
        else:
            seconds = _tokens(row.run) / speeds[_model_key(row.run)][0]
            gave_up = row.state == "pruned" or (row.state == "failed" and row.record.retries >= max_retries)
            remaining += 0 if gave_up else seconds
            longest = max(longest, 0 if gave_up else seconds)
            cost = f"≈{_duration(seconds)}"
        retries = f"{row.record.retries}/{max_retries}" if row.record else ""
        shown = raced.get(row.run.key, row.state) if row.state == "missing" else row.state
        body.append([row.run.key, *(row.run.settings.get(a, "") for a in axes), row.run.seed, shown, retries, cost])
    lines = [tabulate(body, headers=["run", *axes, "seed", "state", "retries", "time"], tablefmt="github")]
    ex = study.spec.executor
    if study.spec.search:
        base = study.make_run(study.spec.base, study.spec.seeds[0], {})
        if _model_key(base) not in speeds:
            speeds[_model_key(base)] = _measure(base)
        per_trial = _tokens(base) / speeds[_model_key(base)][0]
        todo = study.spec.search.trials - len(table)
        remaining += max(0, todo) * per_trial
        lines.append(f"\nsearch: {len(table)} of {study.spec.search.trials} trials launched so far; "
                     f"a trial ≈{_duration(per_trial)}")
    kind, settings = EXECUTORS[ex.kind], ex.model_dump()
    at_once, knob = kind.at_once(settings)
    if race:
        remaining, longest = _race_lines(study, table, speeds, race, lines)
    wall = max(remaining / at_once, longest)  # no sooner than its longest run
    lines.append(f"\nremaining: ≈{_duration(remaining)} of training, ≈{_duration(wall)} wall with {knob}={at_once} "
                 f"({ex.kind} executor)" + (" for the race's next round" if study.spec.race else ""))
    lines += kind.plan_notes(settings)
    for key, (speed, source) in speeds.items():
        lines.append(f"tokens/s {speed:,.0f} for model {key}: {source}")
    lines.append("time ≈ steps x batch x (input + target budget) / tokens/s, training steps only (each run also "
                 "starts up and evaluates); done runs: MLflow run start to end (start-up and evaluation included)")
    return "\n".join(lines)


def _race_state(study: Study, table: list[Row]) -> RaceState | None:
    """Where a race stands by the plan's records (None: not a race)."""
    if not study.spec.race:
        return None
    from ablate.race import race_state

    return race_state(study, {row.run.key: row.record for row in table if row.record})


def _raced(study: Study, table: list[Row], state: RaceState) -> dict[str, str]:
    """A race's runs it has not reached: run key -> ``later`` (a configuration still racing) or ``not needed``
    (eliminated, or the race is over)."""
    from ablate.race import wanted_runs

    wanted = {run.key for run in wanted_runs(study, state)}
    racing = set(state.racing) if state.status == "racing" else set()
    return {row.run.key: "later" if row.run.config_hash in racing else "not needed"
            for row in table if row.run.key not in wanted}


def _race_lines(study: Study, table: list[Row], speeds: dict[str, tuple[float, str]], state: RaceState,
                lines: list[str]) -> tuple[float, float]:
    """Add where the race stands and what its next round launches; returns that round's training seconds and
    its longest run (a race never runs what it has not reached, so the rest of the plan is an upper bound)."""
    from ablate.race import summary, wanted_runs

    lines.append("\n" + summary(study, state))
    by_key = {row.run.key: row for row in table}
    todo = [by_key[run.key] for run in wanted_runs(study, state) if by_key[run.key].state not in ("done", "failed")]
    seconds = [_tokens(row.run) / speeds[_model_key(row.run)][0] for row in todo if row.state != "pruned"]
    if state.status != "racing":
        lines.append("the race is over: nothing more to launch")
    elif todo:
        seeds = sorted({row.run.seed for row in todo})
        lines.append(f"look {state.round} waits for {len(todo)} runs (seeds {', '.join(map(str, seeds))} of the "
                     f"{len(state.racing)} configurations racing); the full grid is {len(table)} runs, a race runs "
                     "fewer unless no configuration is ever eliminated")
    return sum(seconds), max(seconds, default=0.0)


def status_table(study: Study) -> str:
    """Needs the study's runs, not their masking strategies: ``ablate status`` loads the study without building
    them (``load_study(strategies=False)``), and this builds none either, so it runs without torch."""
    table = rows(study, strategies=False)
    axes = _axes(table)
    unsent = {row.run.key: unsent_count(row.run.folder) for row in table}
    body = []
    for row in table:
        step, loss = row.run.progress()
        total = row.run.config["train"]["steps"]
        job = row.record.tags.get("job_id", "") if row.record else ""
        checkpoint = row.run.checkpoint_step()
        body.append([row.run.key, *(row.run.settings.get(a, "") for a in axes), row.run.seed, row.state,
                     f"{step}/{total}", "" if checkpoint is None else checkpoint,
                     f"{loss:.3f}" if loss is not None else "", job, unsent[row.run.key] or ""])
    counts = Counter(row.state for row in table)
    footer = f"\n{len(table)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items())
    if study.spec.search:
        footer += f" (search: {study.spec.search.trials} trials)"
    if counts["unknown"]:
        footer += "\nunknown: the scheduler does not answer (a SLURM controller down?); such runs may be running, " \
                  "and nothing relaunches them until it answers"
    if waiting := sum(n > 0 for n in unsent.values()):
        footer += (f"\nunsent: {waiting} runs hold records their tracking store ({study.store.redacted}) has not "
                   f"taken yet; they go when it answers (a running trainer sends its own, `ablate submit` the rest)")
    # checkpoint: where the run resumes (a requeued or interrupted run goes on from there, not from ``step``)
    headers = ["run", *axes, "seed", "state", "step", "checkpoint", "train/loss", "job", "unsent"]
    return tabulate(body, headers=headers, tablefmt="github") + footer


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _tokens(run: Run) -> float:
    t, m = run.config["train"], run.config["masking"]
    return t["steps"] * t["batch_size"] * t["grad_accum"] * (m["input_budget"] + m["target_budget"])


def _model_key(run: Run) -> str:
    """What throughput mostly depends on."""
    m = run.config["model"]
    return f"dim {m['dim']}, depth {m['enc_depth']}+{m['dec_depth']}, mlp x{m['mlp_ratio']}"


def _throughputs(study: Study, table: list[Row]) -> dict[str, tuple[float, str]]:
    """Tokens per second per model: logged by this study's runs, else measured here."""
    logged: dict[str, list[float]] = {}
    for row in table:
        if row.record and (speed := row.record.metric("train/tokens_per_s")):
            logged.setdefault(_model_key(row.run), []).append(speed)
    out = {key: (statistics.median(v), f"median of {len(v)} runs of this study") for key, v in logged.items()}
    for row in table:
        if _model_key(row.run) not in out:
            out[_model_key(row.run)] = _measure(row.run)
    return out


def throughput_file() -> Path:
    """Speeds timed by ``plan`` on this machine: ``$XDG_CACHE_HOME/nano4m/throughput.json`` (``~/.cache``)."""
    return user_cache() / "throughput.json"


def measured_key(run: Run) -> str:
    """What a speed timed here holds for: the model shape, threads, machine, torch and code."""
    return (f"{_model_key(run)}; threads {run.config['train']['threads']}; {platform.node()}; "
            f"torch {importlib.metadata.version('torch')}; code {study_cache.code_digest().hex()[:16]}")


def _measure(run: Run) -> tuple[float, str]:
    """Tokens per second of a run's config: kept from an earlier plan (``throughput_file``), else timed here."""
    key, file = measured_key(run), throughput_file()
    try:
        kept = json.loads(file.read_text())
    except (OSError, ValueError):
        kept = {}
    kept = kept if isinstance(kept, dict) else {}
    source = f"{MEASURE_STEPS} steps timed here, one run alone"
    if isinstance(kept.get(key), float):
        return kept[key], f"{source} (kept in {file})"
    speed = _time_steps(run)
    study_cache.atomic(file, lambda tmp: tmp.write_text(json.dumps({**kept, key: speed}, indent=1)))
    return speed, source


def _time_steps(run: Run) -> float:
    """Time a few training steps of a run's config here, untracked, in a scratch folder."""
    from model.config import from_dict
    from model.flops import Throughput
    from model.train import TrainOptions, train

    with tempfile.TemporaryDirectory() as scratch:
        config = copy.deepcopy(run.config)
        config["train"].update(steps=MEASURE_STEPS, log_every=MEASURE_STEPS, out_dir=scratch)
        config["tracking"]["enabled"] = False
        results = train(from_dict(config), TrainOptions(evaluate_at_end=False, progress=False))
    return float(results[Throughput.TOKENS_PER_S])
