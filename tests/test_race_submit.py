"""A real race on the local executor: rounds of seeds, an elimination recorded where MLflow shows it, a killed
submitter resubmitted (same decisions, no run launched twice), and ``ablate plan`` saying where it stands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from study_files import IN_BACKGROUND, TINY, wait_for, write_study

from ablate.cli import main
from ablate.ledger import Ledger
from ablate.race import RECORD, race_state
from ablate.study_file import load_study

# The slow configuration barely moves from its initial loss in 60 steps; the other two learn alike.
VARIANTS = {"slow": {"train.lr": 1e-7, "train.min_lr": 1e-8}, "fast": {"train.lr": 3e-3},
            "faster": {"train.lr": 3.3e-3}}
RACE = {"metric": "train/loss", "min_seeds": 3, "max_seeds": 4}


def test_a_killed_race_resumes_with_the_same_decisions_and_launches_nothing_twice(data_root, tmp_path, capsys,
                                                                                  monkeypatch, stop_afterwards):
    monkeypatch.chdir(tmp_path)  # the report the ended race writes goes to reports/ here
    base = {**TINY, "data.root": str(data_root[0]), "train.steps": 60, "train.log_every": 10,
            "train.checkpoint_every": 30}
    path = write_study(tmp_path, data_root, base=base, variants=VARIANTS, race=RACE)
    study = load_study(path)
    ledger = Ledger(study)

    command = [sys.executable, "-m", "ablate.cli", "submit", str(path)]
    submitter = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **IN_BACKGROUND)
    stop_afterwards(path, submitter)

    def second_round() -> bool:  # the first look was taken and the next round launched: kill then
        assert submitter.poll() is None, "the race ended before it could be killed"
        return any(r.seed == 3 for r in _runs(study, ledger))

    wait_for(second_round, "a run of the second round", timeout_s=900)  # 9 runs: ~1 min quiet
    submitter.kill()
    submitter.wait()
    first = race_state(study, ledger.records())
    assert first.round == 2 and list(first.eliminated) == [_config(study, "slow")]  # at the first look
    gone = first.eliminated[_config(study, "slow")]
    assert (gone.round, gone.seeds) == (1, 3) and gone.p < gone.alpha

    assert main(["submit", str(path)]) == 0
    out = capsys.readouterr()
    state = race_state(study, ledger.records())
    assert state.eliminated[_config(study, "slow")] == gone  # the same decision, replayed from the store
    assert state.status in ("won", "ended") and "race on train/loss" in out.err

    records = ledger.records()
    keys = [r.data.tags["run_key"] for r in ledger.client.search_runs([ledger.experiment_id], "tags.kind = 'run'")]
    assert len(keys) == len(set(keys))  # one MLflow run per run key
    wanted = {(run.config_hash, run.seed) for run in study.runs if run.key in records}
    assert wanted == {(c, s) for c, seeds in state.wanted().items() for s in seeds}  # nothing beyond the race
    assert {s for c, s in wanted if c == _config(study, "slow")} == {0, 1, 2}  # no seed after its elimination
    for run in study.runs:
        if run.key in records and run.config_hash == _config(study, "slow"):
            tags = records[run.key].tags
            assert tags["race_eliminated_round"] == "1" and tags["race_versus"].startswith("variant=fast")
            assert float(tags["race_p"]) < float(tags["race_alpha"]) and float(tags["race_spent_h"]) > 0
    parent = ledger.client.get_run(ledger.study_run())
    assert parent.data.tags["race_status"] == state.status
    record = json.loads(Path(ledger.client.download_artifacts(parent.info.run_id, RECORD, str(tmp_path))).read_text())
    assert record["configurations"]["variant=slow"]["state"] == "eliminated"
    assert record["configurations"]["variant=slow"]["eliminated"]["round"] == 1

    # Resubmitting a race that is over launches nothing, and plan says what happened.
    jobs = len(list((tmp_path / "s" / "submitit").glob("*/*_submitted.pkl")))
    assert main(["submit", str(path)]) == 0
    assert len(list((tmp_path / "s" / "submitit").glob("*/*_submitted.pkl"))) == jobs
    capsys.readouterr()
    assert main(["plan", str(path)]) in (0, None)
    plan = capsys.readouterr().out
    assert "variant=slow: eliminated at look 1 (3 seeds)" in plan and "the race is over" in plan
    assert "not needed" in plan


def _runs(study, ledger):
    records = ledger.records()
    return [run for run in study.runs if run.key in records]


def _config(study, variant: str) -> str:
    return next(run.config_hash for run in study.runs if run.settings["variant"] == variant)
