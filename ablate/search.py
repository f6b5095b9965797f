"""Optuna search driven by the submitter: ask a trial whenever a slot is free, tell it when its run ends.

No batch barrier: up to ``executor.max_parallel`` trials run at once and a new one starts as soon
as one ends. Trials live in ``<study dir>/optuna.journal`` (``JournalStorage``, file backend), so a
killed submitter loses nothing: on restart, trials it left RUNNING get their run back (told at
once if the run finished meanwhile, followed if its job still runs, resumed from its checkpoint
otherwise), and finished runs in MLflow that the journal does not know are added back as trials.
A trial whose parameters give a run that already finished is told that run's result, not re-run.
Pruned runs come back as pruned trials; a cancelled run's trial stays RUNNING until the next submit.

The pruner reads ``search.intermediate`` (default ``train/loss``) from MLflow while a run trains;
a pruned trial's job is cancelled and, once it has stopped, its MLflow run is tagged ``pruned`` (a run
that has logged its last training step, or finished before the cancel arrived, completes its trial).
"""

from __future__ import annotations

import json
import sys
from collections import Counter

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from tqdm import tqdm

from ablate.dispatch import Dispatcher
from ablate.ledger import Ledger, Record, search_params
from ablate.schema import SearchParam, StudyError
from ablate.states import FOLLOWED_STATES, state
from ablate.study import Run, Study
from model.config import ConfigError
from model.dataset import DataFormatError


def distribution(param: SearchParam) -> BaseDistribution:
    if param.type == "categorical":
        return CategoricalDistribution(param.choices)
    if param.type == "int":
        return IntDistribution(int(param.low), int(param.high), log=param.log, step=int(param.step or 1))
    return FloatDistribution(param.low, param.high, log=param.log, step=param.step)


def open_search(study: Study) -> optuna.Study:
    """The study's Optuna study, created on first use."""
    spec = study.spec.search
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.dir.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(study.dir / "optuna.journal")))
    # Seeded by how many trials exist, so a restarted random sampler does not replay its first picks.
    seed = spec.seed + len(_existing_trials(storage, study.name))
    sampler = optuna.samplers.TPESampler(seed=seed) if spec.sampler == "tpe" else optuna.samplers.RandomSampler(seed)
    pruner = optuna.pruners.NopPruner()
    if spec.pruner == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=spec.prune_after_trials,
                                             n_warmup_steps=spec.prune_after_step)
    return optuna.create_study(storage=storage, study_name=study.name, direction=spec.direction, sampler=sampler,
                               pruner=pruner, load_if_exists=True)


def _existing_trials(storage: JournalStorage, name: str) -> list:
    try:
        return storage.get_all_trials(storage.get_study_id_from_name(name), deepcopy=False)
    except KeyError:
        return []


class Search:
    """One submitter session of a search: asks, launches, reports, prunes, tells."""

    def __init__(self, study: Study, progress: bool = True):
        self.study, self.spec, self.progress = study, study.spec.search, progress
        self.ledger = Ledger(study)
        self.dispatcher = Dispatcher(study, self.ledger)
        self.optuna = open_search(study)
        self.distributions = {k: distribution(p) for k, p in self.spec.params.items()}
        self.records = self.ledger.records()
        self.waiting: dict[str, list[optuna.Trial]] = {}  # run key -> trials told when that run ends
        self.reported: dict[str, int] = {}  # run key -> last step reported to the pruner
        self.cancelled = False  # a run's job was cancelled: the search is being stopped, ask no more trials

    def run(self) -> optuna.Study:
        self._recover()
        trials = self.optuna.get_trials(deepcopy=False)
        finished = sum(t.state.is_finished() for t in trials)

        def polled() -> None:  # after the runs that ended: a run that finished is complete, not pruned
            self._report()
            bar.n = sum(t.state.is_finished() for t in self.optuna.get_trials(deepcopy=False))
            bar.refresh()

        with tqdm(total=self.spec.trials, initial=finished, desc=self.study.name, unit="trial",
                  disable=not self.progress) as bar:
            # One trial per launch: whether it takes a slot is known only once its run is (it may have run before).
            self.dispatcher.drive(self.study.spec.executor.max_parallel, more=self._more,
                                  launch=lambda free: self._start(self._ask()), ended=self._ended, polled=polled,
                                  progress=self.progress)
        return self.optuna

    def _ended(self, run: Run, outcome: str) -> None:
        """Tell the trials waiting for a run how it ended."""
        trials = self.waiting.pop(run.key)
        if outcome == "interrupted":  # cancelled: its trials stay RUNNING, the next submit resumes them
            self.cancelled = True
            return
        record = self.records[run.key] = self.ledger.record(self.records[run.key].run_id)
        if outcome == "cancelled":  # pruned, and its job has stopped
            self.ledger.set_tags(record.run_id, pruned=1)
        for trial in trials:
            self._tell(trial, record if outcome == "done" else None, pruned=outcome == "cancelled")

    def _more(self) -> bool:
        return not self.cancelled and len(self.optuna.get_trials(deepcopy=False)) < self.spec.trials

    def _ask(self) -> optuna.Trial:
        try:
            return self.optuna.ask(self.distributions)
        except ValueError as e:  # e.g. categorical choices changed: Optuna keeps one value space per study
            journal = self.study.dir / "optuna.journal"
            raise StudyError(f"{self.study.path}: search.params no longer fit the trials in {journal} ({e}); "
                             f"move that file away to start a new search (finished runs come back as trials)") from None

    def _recover(self) -> None:
        """Re-attach trials a killed submitter left RUNNING; add back finished runs the journal lacks."""
        known = set()
        for frozen in self.optuna.get_trials(deepcopy=False):
            known.add(frozen.user_attrs.get("run_key"))
            if frozen.state == TrialState.RUNNING and frozen.params.keys() != self.distributions.keys():
                self.optuna.tell(frozen.number, state=TrialState.FAIL)  # killed before its parameters were drawn
            elif frozen.state == TrialState.RUNNING:
                key = self._start(optuna.Trial(self.optuna, frozen._trial_id))
                self.reported[key] = max(frozen.intermediate_values, default=0)
        for key, record in self.records.items():
            params, s = search_params(record), state(record)
            if key in known or params is None or s not in ("done", "pruned"):
                continue
            history = self.ledger.client.get_metric_history(record.run_id, self.spec.intermediate)
            try:
                self.optuna.add_trial(optuna.trial.create_trial(
                    params=params, distributions=self.distributions, user_attrs={"run_key": key},
                    state=TrialState.COMPLETE if s == "done" else TrialState.PRUNED,
                    value=record.metric(self.spec.metric) if s == "done" else None,
                    intermediate_values={m.step: m.value for m in history}))  # the pruner compares to them
            except ValueError:  # outside today's search space, or no metric: not a trial of this search
                continue

    def _start(self, trial: optuna.Trial) -> str:
        """Find, follow or launch the run for a trial's parameters; returns its run key."""
        params = trial.params
        try:
            run = self.study.make_run({**self.study.spec.base, **params}, self.study.spec.seeds[0], params)
        except (ConfigError, DataFormatError) as e:
            tqdm.write(f"trial {trial.number} {params}: {e}", file=sys.stderr)
            self.optuna.tell(trial, state=TrialState.FAIL)
            return ""
        trial.set_user_attr("run_key", run.key)
        if run.key in self.waiting:  # the sampler picked a configuration already running
            self.waiting[run.key].append(trial)
            return run.key
        record = self.records.get(run.key)
        s = state(record)
        if s in ("done", "pruned") or (s == "failed" and record.retries >= self.study.spec.executor.max_retries):
            self._tell(trial, record if s == "done" else None, pruned=s == "pruned")
            return run.key
        self.waiting[run.key] = [trial]
        if s in FOLLOWED_STATES:
            self.dispatcher.follow(run, record)
        elif s == "failed":
            self.dispatcher.retry(run, record)
        else:
            self.dispatcher.launch([run], self.records, tags={"search_params": json.dumps(params)})
            self.records[run.key] = self.ledger.record(self.dispatcher.active[run.key].run_id)
        return run.key

    def _report(self) -> None:
        """Feed the pruner from MLflow; cancel runs it prunes."""
        for key, trials in list(self.waiting.items()):
            active = self.dispatcher.active.get(key)
            if active is None or active.cancelled:  # followed by the ledger, or being pruned
                continue
            history = self.ledger.client.get_metric_history(active.run_id, self.spec.intermediate)
            new = sorted((m.step, m.value) for m in history if m.step > self.reported.get(key, 0))
            for step, value in new:
                for trial in trials:
                    trial.report(value, step)
                self.reported[key] = step
            if not new or new[-1][0] >= active.run.config["train"]["steps"]:  # nothing new, or it is finishing
                continue
            if all(trial.should_prune() for trial in trials):
                self.dispatcher.cancel(key)  # told pruned once its job has stopped, complete if it finished first

    def _tell(self, trial: optuna.Trial, record: Record | None, pruned: bool = False) -> None:
        value = record.metric(self.spec.metric) if record else None
        if pruned:
            self.optuna.tell(trial, state=TrialState.PRUNED)
        elif value is None:
            if record is not None:
                tqdm.write(f"trial {trial.number}: run has no metric {self.spec.metric!r}", file=sys.stderr)
            self.optuna.tell(trial, state=TrialState.FAIL)
        else:
            self.optuna.tell(trial, value)


def summary(search: optuna.Study) -> str:
    """Trials by state and the best one so far (a later report module goes further)."""
    trials = search.get_trials(deepcopy=False)
    counts = Counter(t.state.name.lower() for t in trials)
    line = f"{len(trials)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.items())
    if not counts["complete"]:
        return line
    best = search.best_trial
    return (f"{line}\nbest: trial {best.number}, value {best.value:.4g}, "
            f"params {best.params}, run {best.user_attrs.get('run_key')}")
