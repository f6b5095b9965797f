"""Optuna search driven by the submitter: ask a trial whenever a slot is free, tell it when its run ends.

No batch barrier: up to ``executor.max_parallel`` trials run at once and a new one starts as soon
as one ends. Trials live in the study's search storage (``Store.search``): ``<study dir>/optuna.journal``
(``JournalStorage``, file backend) beside the default SQLite store, or Optuna's tables (``RDBStorage``) in
the schema ``optuna`` of the study's PostgreSQL database (beside MLflow's tables, whose names, the Alembic
version table among them, Optuna's would clash with). A killed submitter loses nothing: on restart, trials
it left RUNNING get their run back (told at once if the run finished meanwhile, followed if its job still
runs, resumed from its checkpoint otherwise), and finished runs in MLflow that the storage does not know
are added back as trials. A trial whose parameters give a run that already finished is told that run's
result, not re-run.

Optuna's heartbeat works only inside ``study.optimize``, not with ask/tell, so the submitter ends every trial
itself from what the executor says of its run's job (``Dispatcher.poll``): a run that finished is told its
metric; one that failed is relaunched while it has retries and told FAIL once it has none; a run whose job
was stopped from outside (``ablate cancel``, ``scancel``) is told FAIL and marked ``interrupted``, and its
parameters are asked again (enqueued) so that the next submit resumes the same run from its checkpoint; an
interrupted trial does not count toward ``search.trials``. No trial is left RUNNING by a submitter that ends.
Pruned runs come back as pruned trials.

The pruner reads ``search.intermediate`` (default ``train/loss``) from MLflow while a run trains;
a pruned trial's job is cancelled and, once it has stopped, its MLflow run is tagged ``pruned`` (a run
that has logged its last training step, or finished before the cancel arrived, completes its trial).
"""

from __future__ import annotations

import json
from collections import Counter

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from ablate.dispatch import Dispatcher
from ablate.ledger import Ledger, Record, search_params
from ablate.progress import Progress, say
from ablate.schema import SearchParam, StudyError
from ablate.states import FOLLOWED_STATES, state
from ablate.store import OPTUNA_SCHEMA, connect, kind, optuna_url, redacted
from ablate.study import Run, Study
from model.config import ConfigError
from model.dataset import DataFormatError

INTERRUPTED = "interrupted"  # user attribute of a FAIL trial whose run stopped without an outcome; not counted


def distribution(param: SearchParam) -> BaseDistribution:
    if param.type == "categorical":
        return CategoricalDistribution(param.choices)
    if param.type == "int":
        return IntDistribution(int(param.low), int(param.high), log=param.log, step=int(param.step or 1))
    return FloatDistribution(param.low, param.high, log=param.log, step=param.step)


def search_storage(location: str) -> BaseStorage:
    """The Optuna storage at ``Store.search``: a journal file, or a PostgreSQL database (``optuna_url``) whose
    schema ``OPTUNA_SCHEMA`` is created on first use (``StoreError`` when the database does not answer)."""
    if not _is_database(location):
        return JournalStorage(JournalFileBackend(location))
    with connect(location) as db:
        db.execute(f"CREATE SCHEMA IF NOT EXISTS {OPTUNA_SCHEMA}")
    # pool_pre_ping: a connection the server dropped (a restart) is replaced instead of failing the next tell.
    return RDBStorage(optuna_url(location), engine_kwargs={"pool_pre_ping": True})


def open_search(study: Study) -> optuna.Study:
    """The study's Optuna study, created on first use."""
    spec = study.spec.search
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.dir.mkdir(parents=True, exist_ok=True)
    storage = search_storage(study.store.search)
    # Seeded by how many trials exist, so a restarted random sampler does not replay its first picks.
    seed = spec.seed + len(_existing_trials(storage, study.name))
    sampler = optuna.samplers.TPESampler(seed=seed) if spec.sampler == "tpe" else optuna.samplers.RandomSampler(seed)
    pruner = optuna.pruners.NopPruner()
    if spec.pruner == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=spec.prune_after_trials,
                                             n_warmup_steps=spec.prune_after_step)
    return optuna.create_study(storage=storage, study_name=study.name, direction=spec.direction, sampler=sampler,
                               pruner=pruner, load_if_exists=True)


def start_over(study: Study) -> str:
    """How to drop a search's trials to start a new search in the same storage."""
    location = study.store.search
    if not _is_database(location):
        return f"move {location} away"
    return (f"delete them with `optuna delete-study --study-name {study.name} "
            f"--storage '{redacted(optuna_url(location))}'`")


def _is_database(location: str) -> bool:
    """Whether ``Store.search`` is a database URI (the schema allows PostgreSQL only) rather than a journal path."""
    return "://" in location and kind(location) == "database"


def _existing_trials(storage: BaseStorage, name: str) -> list:
    try:
        return storage.get_all_trials(storage.get_study_id_from_name(name), deepcopy=False)
    except KeyError:
        return []


def counted(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """The trials that count toward ``search.trials``: all but the interrupted ones, which are asked again."""
    return [t for t in trials if not t.user_attrs.get(INTERRUPTED)]


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
        self.failed: dict[str, Run] = {}  # run key -> run that failed for good (its trials told FAIL)
        self.unmade: list[str] = []  # trials told FAIL because their parameters make no run: why, a line each

    def run(self) -> optuna.Study:
        self._check_space()
        self._recover()

        def finished() -> int:
            return sum(t.state.is_finished() for t in counted(self.optuna.get_trials(deepcopy=False)))

        def polled() -> None:  # after the runs that ended: a run that finished is complete, not pruned
            self._report()
            shown.count(finished())

        with Progress(self.study.name, self.spec.trials, finished(), "trial", self.study.spec.evaluate,
                      shown=self.progress) as shown:
            # One trial per launch: whether it takes a slot is known only once its run is (it may have run before).
            self.dispatcher.drive(self.study.spec.executor.max_parallel, more=self._more,
                                  launch=lambda free: self._start(self.optuna.ask(self.distributions)),
                                  ended=self._ended, polled=polled, progress=shown)
        return self.optuna

    def _ended(self, run: Run, outcome: str) -> None:
        """Tell the trials waiting for a run how it ended."""
        trials = self.waiting.pop(run.key)
        if outcome == "interrupted":  # stopped from outside: the search is being stopped; the next submit resumes it
            self.cancelled = True
            for trial in trials:
                self._interrupt(trial)
                self.optuna.enqueue_trial(trial.params, user_attrs={"run_key": run.key})
            return
        record = self.records[run.key] = self.ledger.record(self.records[run.key].run_id)
        if outcome == "cancelled":  # pruned, and its job has stopped
            self.ledger.set_tags(record.run_id, pruned=1)
        elif outcome == "failed":
            self.failed[run.key] = run
        for trial in trials:
            self._tell(trial, record if outcome == "done" else None, pruned=outcome == "cancelled")

    def _more(self) -> bool:
        """Whether to ask: trials are missing, or some are waiting (an interrupted one's, asked again)."""
        trials = self.optuna.get_trials(deepcopy=False)
        missing = len(counted(trials)) < self.spec.trials
        return not self.cancelled and (missing or any(t.state == TrialState.WAITING for t in trials))

    def _check_space(self) -> None:
        """Refuse, before any trial is asked (an ask that fails would leave its trial RUNNING), a search space
        the stored trials do not fit: Optuna keeps one value space per parameter (e.g. categorical choices)."""
        for trial in self.optuna.get_trials(deepcopy=False):
            for name in trial.distributions.keys() & self.distributions.keys():
                try:
                    optuna.distributions.check_distribution_compatibility(trial.distributions[name],
                                                                          self.distributions[name])
                except ValueError as e:
                    raise StudyError(f"{self.study.path}: search.params.{name} no longer fits the trials of "
                                     f"search {self.study.name!r} in {redacted(self.study.store.search)} ({e}); "
                                     f"{start_over(self.study)} to start a new search (finished runs come back "
                                     f"as trials)") from None

    def _recover(self) -> None:
        """Re-attach trials a killed submitter left RUNNING; add back finished runs the storage lacks."""
        known = set()
        for frozen in self.optuna.get_trials(deepcopy=False):
            known.add(frozen.user_attrs.get("run_key"))
            if frozen.state == TrialState.RUNNING and frozen.params.keys() != self.distributions.keys():
                self._interrupt(optuna.Trial(self.optuna, frozen._trial_id))  # killed before its parameters were drawn
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
            self.unmade.append(f"trial {trial.number} {params}: {e}")
            say(self.unmade[-1])
            self.optuna.tell(trial, state=TrialState.FAIL)
            return ""
        trial.set_user_attr("run_key", run.key)
        if run.key in self.waiting:  # the sampler picked a configuration already running
            self.waiting[run.key].append(trial)
            return run.key
        record = self.records.get(run.key)
        s = state(record)
        if s == "failed" and record.retries >= self.study.spec.executor.max_retries:
            self.failed[run.key] = run
        if s in ("done", "pruned") or run.key in self.failed:
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

    def _interrupt(self, trial: optuna.Trial) -> None:
        """End a trial whose run stopped without an outcome: FAIL, not counted toward ``search.trials``."""
        trial.set_user_attr(INTERRUPTED, True)
        self.optuna.tell(trial, state=TrialState.FAIL)

    def _tell(self, trial: optuna.Trial, record: Record | None, pruned: bool = False) -> None:
        value = record.metric(self.spec.metric) if record else None
        if pruned:
            self.optuna.tell(trial, state=TrialState.PRUNED)
        elif value is None:
            if record is not None:
                say(f"trial {trial.number}: run has no metric {self.spec.metric!r}")
            self.optuna.tell(trial, state=TrialState.FAIL)
        else:
            self.optuna.tell(trial, value)


def summary(search: optuna.Study) -> str:
    """Trials by state (an interrupted trial's, asked again, as ``interrupted``) and the best one so far."""
    trials = search.get_trials(deepcopy=False)
    counts = Counter(INTERRUPTED if t.user_attrs.get(INTERRUPTED) else t.state.name.lower() for t in trials)
    line = f"{len(trials)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.items())
    if not counts["complete"]:
        return line
    best = search.best_trial
    return (f"{line}\nbest: trial {best.number}, value {best.value:.4g}, "
            f"params {best.params}, run {best.user_attrs.get('run_key')}")
