"""Racing a grid study: the submitter runs rounds of seeds and drops what ``ablate/race_rule.py`` finds worse.

Round 1 runs every configuration on the first ``race.min_seeds`` seeds (SLURM: one job array, local: up to
``max_parallel`` at once); once every run of the round has ended, the rule looks; the configurations still
racing get the round's next seeds, all the same ones, so comparisons stay paired. Nothing about the race is
kept but what the study's store holds: the decisions are replayed from the ``race.metric`` of its finished runs
(``race_state``), so a killed submitter, resubmitted, takes the same decisions and, as for a grid, launches
no run twice (a run queued or running is followed). An eliminated configuration's runs stay recorded.

Each decision is written down where MLflow shows it (rewritten from the replay, never read back):

    on every run of an eliminated configuration   tags race_eliminated_round, race_seeds, race_versus,
                                                  race_p (Holm-adjusted), race_alpha (the look's level),
                                                  race_test, race_spent_h (run-hours spent by the race then)
    on the study's parent run                     tags race_status, race_round, race_winner and the artifact
                                                  race.json: every configuration's state and each look's means
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict

from ablate.ledger import Ledger, Record
from ablate.race_rule import SPENDING, TESTS, RaceRule, RaceState, replay
from ablate.study import Run, Study
from model.tasks import direction

RECORD = "race.json"  # the parent run's artifact
STATUS_WORDS = {"racing": "racing", "won": "won", "tied": "tied (every other configuration within the margin)",
                "ended": "ended at max_seeds with several configurations left"}


def rule_of(study: Study) -> RaceRule:
    return RaceRule.of(study.spec.race, direction(study.spec.race.metric))


def configs_of(study: Study) -> list[str]:
    """The study's configurations (config hashes) in its order."""
    return list(dict.fromkeys(run.config_hash for run in study.runs))


def labels_of(study: Study) -> dict[str, str]:
    return {run.config_hash: run.label for run in study.runs}


def replay_study(study: Study, values: dict[str, dict[int, float]], ended: set[tuple[str, int]]) -> RaceState:
    """The race of ``study`` replayed from values (config hash -> seed -> metric) and ended (config hash, seed)."""
    return replay(rule_of(study), study.spec.seeds, configs_of(study), values, ended)


def race_state(study: Study, records: dict[str, Record]) -> RaceState:
    """Where the race stands by its store's records (run key -> ``Record``): a run has ended once FINISHED, or
    FAILED with its retries spent; a finished run's value is its ``race.metric`` (NaN if it logged none)."""
    metric, retries = study.spec.race.metric, study.spec.executor.max_retries
    values: dict[str, dict[int, float]] = {}
    ended = set()
    for run in study.runs:
        record = records.get(run.key)
        if record is None:
            continue
        if record.status == "FINISHED":
            value = record.metric(metric)
            values.setdefault(run.config_hash, {})[run.seed] = math.nan if value is None else value
            ended.add((run.config_hash, run.seed))
        elif record.status == "FAILED" and record.retries >= retries:
            ended.add((run.config_hash, run.seed))
    return replay_study(study, values, ended)


def wanted_runs(study: Study, state: RaceState) -> list[Run]:
    """The runs the race needs now: every configuration's seeds so far (``RaceState.wanted``)."""
    wanted = state.wanted()
    return [run for run in study.runs if run.seed in wanted[run.config_hash]]


def spent_hours(study: Study, state: RaceState, records: dict[str, Record], look: int) -> float:
    """Run-hours (MLflow start to end) of the runs the race had used by its look ``look`` (1-based)."""
    seeds_at = state.rule.looks()[look - 1].seeds
    hours = 0.0
    for run in study.runs:
        gone = state.eliminated.get(run.config_hash)
        limit = min(seeds_at, gone.seeds) if gone and gone.round < look else seeds_at
        record = records.get(run.key)
        if run.seed in state.seeds[:limit] and record is not None and record.seconds:
            hours += record.seconds / 3600
    return hours


def describe(study: Study, state: RaceState) -> dict:
    """The race as ``race.json`` holds it: rule, status, each configuration's state, each look's means."""
    labels = labels_of(study)
    configs = {}
    for config in state.configs:
        gone = state.eliminated.get(config)
        configs[labels[config]] = {
            "config": config, "seeds": len(state.seeds_of(config)),
            "state": ("winner" if config == state.winner else "eliminated" if gone else
                      "tied" if config in state.tied else "racing"),
            **({"eliminated": {**asdict(gone), "versus": labels[gone.versus]}} if gone else {}),
        }
    return {"metric": study.spec.race.metric, "rule": asdict(state.rule), "status": state.status,
            "round": state.round, "leader": labels.get(state.leader), "configurations": configs,
            "looks": [{"round": h.look.round, "seeds": h.look.seeds, "alpha": h.look.alpha,
                       "means": {labels[c]: m for c, m in h.means.items()},
                       "eliminated": [labels[c] for c in h.eliminated]} for h in state.history]}


def test_words(rule: RaceRule) -> str:
    return f"{rule.test} t-test, Holm over pairs, {rule.spending} spending of alpha {rule.alpha:g}"


class RaceRecorder:
    """Writes the race's decisions to the store: tags on eliminated configurations' runs, the parent's record.
    Idempotent: a tag already saying the same is not written again."""

    def __init__(self, study: Study, ledger: Ledger, parent_id: str):
        self.study, self.ledger, self.parent_id = study, ledger, parent_id
        self.written: str | None = None

    def write(self, state: RaceState, records: dict[str, Record]) -> None:
        labels = labels_of(self.study)
        for config, gone in state.eliminated.items():
            tags = {"race_eliminated_round": gone.round, "race_seeds": gone.seeds, "race_versus": labels[gone.versus],
                    "race_p": f"{gone.p:.3g}", "race_alpha": f"{gone.alpha:.3g}", "race_test": test_words(state.rule),
                    "race_spent_h": f"{spent_hours(self.study, state, records, gone.round):.3f}"}
            for run in self.study.runs:
                record = records.get(run.key)
                if run.config_hash == config and record is not None:
                    self.ledger.set_tags(record.run_id, **{k: v for k, v in tags.items()
                                                         if record.tags.get(k) != str(v)})
        text = json.dumps(describe(self.study, state), indent=2)
        if text != self.written:
            winner = state.winner
            self.ledger.set_tags(self.parent_id, race_status=state.status, race_round=state.round,
                                 race_winner=labels[winner] if winner else "")
            self.ledger.client.log_text(self.parent_id, text, RECORD)
            self.written = text


def summary(study: Study, state: RaceState) -> str:
    """Where the race stands, in a few lines: each configuration's state, then what comes next."""
    labels = labels_of(study)
    rule = state.rule
    lines = [f"race on {study.spec.race.metric} ({rule.direction} is better): {STATUS_WORDS[state.status]}, "
             f"look {state.round} of {len(rule.looks())}; {TESTS[rule.test].split(' (')[0]}, Holm over pairs, "
             f"{SPENDING[rule.spending]} spending of alpha {rule.alpha:g}"
             + (f", margin {rule.margin:g}" if rule.margin else "")]
    for config in state.configs:
        gone = state.eliminated.get(config)
        if gone:
            what = (f"eliminated at look {gone.round} ({gone.seeds} seeds): worse than {labels[gone.versus]}, "
                    f"p={gone.p:.3g} (Holm) < {gone.alpha:.3g}")
        elif config == state.winner:
            what = "winner"
        elif config in state.tied:
            what = f"tied with {labels[state.leader]}"
        else:
            what = "racing" + (" (leads)" if config == state.leader else "")
        lines.append(f"  {labels[config]}: {what}; {len(state.seeds_of(config))} seeds")
    return "\n".join(lines)


def submit_race(study: Study, wait: bool, progress: bool) -> tuple[dict[str, str], RaceState]:
    """Run rounds until the race ends (or, SLURM without ``wait``, launch the round it is at and return);
    returns run key -> state of the runs the race has needed, and where it stands."""
    from ablate.dispatch import Dispatcher, follow_and_launch

    ledger = Ledger(study)
    dispatcher = Dispatcher(study, ledger)
    recorder = RaceRecorder(study, ledger, dispatcher.parent_id)
    states: dict[str, str] = {}
    looked = None
    while True:
        records = ledger.records()
        state = race_state(study, records)
        recorder.write(state, records)
        print(summary(study, state), file=sys.stderr)
        if state.status != "racing" or (state.round, len(state.eliminated)) == looked:
            break  # ended; or a round ended without its look, which every run ended rules out
        looked = state.round, len(state.eliminated)
        states |= follow_and_launch(study, dispatcher, ledger, wanted_runs(study, state), wait, progress,
                                    f"look {state.round}")
        if not _round_over(states) or (dispatcher.kind.detached and not wait):
            break
    if state.status != "racing":
        ledger.end(dispatcher.parent_id, "FINISHED")
    return states, state


def _round_over(states: dict[str, str]) -> bool:
    """Every run of the round ended (done or failed for good); not when one was interrupted or is unknown."""
    return all(s in ("done", "failed") for s in states.values())
