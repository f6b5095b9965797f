"""Studies: validation before anything runs, run identity, states, and the local submit/resume/retry/search cycle."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import psutil
import pytest
from study_files import IN_BACKGROUND, LOCAL, TINY, children, wait_for, write_study
from tracking_server import free_port

from ablate import study_cache
from ablate.cli import EXIT_UNFINISHED, main
from ablate.dispatch import submit
from ablate.ledger import Ledger, Record
from ablate.overview import plan_table, status_table
from ablate.schema import StudyError
from ablate.search import Search, open_search
from ablate.states import state
from ablate.study import config_hash
from ablate.study_file import load_study
from ablate.tracking import run_tracker
from model.config import from_dict
from model.dataset import DatasetSpec
from model.run_folder import RunFolder
from model.train import TrainOptions, logged_metrics, train


def test_every_problem_is_reported_with_file_key_value_and_allowed_and_nothing_is_touched(data_root, tmp_path, capsys):
    path = write_study(tmp_path, data_root, seeds=[0], grid={"masking": ["random", "blockx"], "train.stepz": [1]},
                       executor={"kind": "local", "max_parallel": 0, "threads_per_run": "one", "gpu": 1})
    with pytest.raises(StudyError) as e:
        load_study(path)
    message = str(e.value)
    lines = message.splitlines()[1:]
    assert all(line.strip().startswith(str(path)) for line in lines), message
    assert "executor.gpu: unknown key; allowed keys here: kind, max_parallel" in message  # wrong key
    assert "executor.threads_per_run: 'one': should be a valid integer" in message  # wrong type
    assert "executor.max_parallel: 0: should be greater than or equal to 1" in message  # out of range
    assert "grid.masking: 'blockx': unknown masking strategy; allowed: " in message  # unknown strategy
    assert "dirichlet" in message and "random" in message
    assert "grid.train.stepz: unknown config key 'train.stepz'; allowed keys under 'train':" in message  # composed
    assert len(lines) == 5

    assert main(["submit", str(path)]) == 2
    assert "ablate: error: " in capsys.readouterr().err
    assert not (tmp_path / "s").exists()  # no study folder, no MLflow store, no job


def test_bookkeeping_keys_search_ranges_and_a_bad_run_config_are_refused(data_root, tmp_path):
    path = write_study(tmp_path, data_root, base={**TINY, "data.root": str(data_root[0]), "train.seed": 1},
                       grid={"masking.input_budget": [64, 5000]}, report={"baseline": {"masking": "block"}})
    with pytest.raises(StudyError) as e:
        load_study(path)
    assert "base.train.seed: set by the study (list seeds under 'seeds')" in str(e.value)
    assert "grid.masking.input_budget: masking.input_budget=5000: must be an integer from 1 to" in str(e.value)
    assert "report.baseline: {'masking': 'block'} matches no configuration" in str(e.value)

    search = {"params": {"train.lr": {"type": "float", "low": 1.0, "high": 0.1}}, "trials": 2}
    with pytest.raises(StudyError, match=r"search.params.train.lr: low=1.0 must be below high=0.1"):
        load_study(write_study(tmp_path, data_root, name="q", search=search))


def test_run_identity_is_stable_seed_separated_and_ignores_bookkeeping(data_root, tmp_path):
    grid = {"masking": ["random", "dirichlet"]}
    a = load_study(write_study(tmp_path, data_root, seeds=[0, 1], grid=grid))
    again = load_study(write_study(tmp_path, data_root, seeds=[0, 1], grid=grid))
    busier = load_study(write_study(tmp_path / "elsewhere", data_root, seeds=[1], grid=grid,
                                    executor={**LOCAL, "threads_per_run": 2}))
    keys = [r.key for r in a.runs]
    assert keys == [r.key for r in again.runs]
    assert len(set(keys)) == 4 and len({r.config_hash for r in a.runs}) == 2
    assert a.runs[0].config_hash == a.runs[1].config_hash and keys[:2] == [f"{a.runs[0].config_hash}-s{s}"
                                                                         for s in (0, 1)]
    assert [r.key for r in busier.runs] == [keys[1], keys[3]]  # threads and study folder are not identity
    assert a.runs[0].out_dir == tmp_path / "s" / "runs" / keys[0]
    longer = load_study(write_study(tmp_path, data_root, name="t", base={**TINY, "data.root": str(data_root[0]),
                                                                         "train.steps": 5}, grid=grid))
    assert longer.runs[0].config_hash != a.runs[0].config_hash
    assert config_hash(a.runs[0].config) == a.runs[0].config_hash
    compiled = copy.deepcopy(a.runs[0].config)
    compiled["train"].update(compile=True, feed="prefetch", peak_tflops=989.0)  # how it runs, not what it trains
    assert config_hash(compiled) == a.runs[0].config_hash
    assert from_dict(a.runs[0].config).train.seed == 0  # a run's config is complete and valid


def test_run_keys_of_the_shipped_studies_are_pinned(data_root, tmp_path, monkeypatch):
    """A run's key is its identity on disk and in MLflow: a change that alters the resolved config of the shipped
    studies re-keys their runs, and must say so (pinned in session 11, when the model gained codebook
    embeddings and the grid bias; the presets' auto budgets and default alphas resolve to the numbers they
    replaced; data.root is part of a key)."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "scenes").symlink_to(data_root[0])
    monkeypatch.chdir(tmp_path)
    pinned = {"quickstart": ["047884792a3a-s0", "047884792a3a-s1", "99dff2c9f3ed-s0", "99dff2c9f3ed-s1",
                             "765f188fca9e-s0", "765f188fca9e-s1"],
              "families": ["d104978b3327-s0", "0c7b5c69e396-s0", "ac3c55a56cff-s0", "92491ce4a734-s0",
                           "94761c8fe01f-s0", "0d74ea8f225d-s0", "24e1447a53ef-s0"]}
    masking = {"quickstart": ["random", "random", "dirichlet_4m", "dirichlet_4m", "block", "block"],
               "families": ["random", "dirichlet", "block", "aligned", "sparse", "dense", "hard"]}
    for name, keys in pinned.items():
        (tmp_path / f"{name}.yaml").write_text((Path(__file__).parents[1] / "studies" / f"{name}.yaml").read_text())
        runs = load_study(tmp_path / f"{name}.yaml").runs
        assert [r.key for r in runs] == keys, name
        assert [r.masking for r in runs] == masking[name], name  # the study's choice, presets by their own name


def test_a_run_is_known_by_the_masking_its_study_chose(data_root, tmp_path):
    variants = {"4m": {"masking": "dirichlet_4m"}, "sparse-block": {"masking": "sparse", "masking.name": "block"},
                "default": {"train.lr": 0.001}}
    runs = load_study(write_study(tmp_path, data_root, variants=variants)).runs
    assert [(r.masking, r.family) for r in runs] == [("dirichlet_4m", "dirichlet"), ("block", "block"),
                                                     ("dirichlet", "dirichlet")]


def test_the_masking_families_known_without_torch_are_the_registered_ones():
    from ablate.validate import families
    from model.masking import STRATEGIES

    assert families() == sorted(STRATEGIES)


def test_variants_are_named_non_cartesian_configurations(data_root, tmp_path):
    variants = {"dir-a0.5": {"masking": "dirichlet", "masking.input_alphas.rgb": 0.5}, "rand": {"masking": "random"}}
    study = load_study(write_study(tmp_path, data_root, variants=variants, grid={"train.lr": [1e-3, 2e-3]}))
    assert [r.label for r in study.runs] == ["variant=dir-a0.5 train.lr=0.001", "variant=dir-a0.5 train.lr=0.002",
                                              "variant=rand train.lr=0.001", "variant=rand train.lr=0.002"]
    assert study.runs[0].config["masking"]["input_alphas"]["rgb"] == 0.5


def _record(status: str, **tags: str) -> Record:
    return Record("id", status, tags, {}, None, None)


def test_states_from_mlflow_status_and_job_liveness(data_root, tmp_path):
    assert state(None) == "missing"
    assert state(_record("SCHEDULED")) == "missing"  # created, never launched
    assert state(_record("FINISHED")) == "done"
    assert state(_record("FAILED", executor="local", job_id="1")) == "failed"  # pid 1 is no submitit job
    assert state(_record("RUNNING", executor="local", job_id="999999999")) == "interrupted"
    assert state(_record("KILLED", pruned="1")) == "pruned"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "submitit"])
    try:
        while not Path(f"/proc/{sleeper.pid}/cmdline").read_bytes():  # exec still in progress
            time.sleep(0.01)
        assert state(_record("RUNNING", executor="local", job_id=str(sleeper.pid))) == "running"
        assert state(_record("SCHEDULED", executor="local", job_id=str(sleeper.pid))) == "queued"
    finally:
        sleeper.kill()
        sleeper.wait()

    study = load_study(write_study(tmp_path, data_root, seeds=[0, 1]))
    plan = plan_table(study)
    assert plan.count("missing") == 2 and "tokens/s" in plan
    assert not (tmp_path / "s" / "mlflow.db").exists()  # plan reads, never creates


def test_the_process_that_creates_the_experiment_makes_its_parent_run_at_once(data_root, tmp_path, monkeypatch):
    # Whatever that process opened the ledger for (reading records, say): every other one waits for the parent
    # run (up to PARENT_WAIT_S, a minute) rather than make a second.
    study = load_study(write_study(tmp_path, data_root))
    parent = Ledger(study).study_run()
    assert parent is not None
    monkeypatch.setattr("ablate.ledger.PARENT_WAIT_S", 0.0)  # a second process would not find it: it makes one
    assert Ledger(study).parent_id() == parent
    ledger = Ledger(study, create=False)
    assert len(ledger.client.search_runs([ledger.experiment_id], "tags.kind = 'study'")) == 1


@pytest.mark.parametrize("command, torch", [("status", False), ("cancel", False), ("plan", True), ("plan", False)])
def test_status_and_cancel_never_build_the_study_s_torch_objects(finished_study, command, torch):
    """status expands the study without building its masking strategies, cancel reads its store alone; plan,
    which checks the study whole, shows that the probe sees torch when it is loaded: the first time, then the study
    it checked is kept (``ablate/study_cache.py``) and a second plan needs no torch."""
    if command == "plan" and torch:
        (study_cache.folder(load_study(finished_study, expand=False)) / "study.pkl").unlink(missing_ok=True)
    elif command == "plan":  # the first plan, here: the [plan-True] case may have run in another pytest worker
        first = subprocess.run([sys.executable, "-m", "ablate.cli", "plan", str(finished_study)], capture_output=True,
                               text=True, timeout=300)
        assert first.returncode == 0, first.stderr
    probe = (f"import sys\nfrom ablate.cli import main\nassert main([{command!r}, {str(finished_study)!r}]) == 0\n"
             "print('torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    printed = done.stdout.strip().splitlines()
    assert printed[-1] == str(torch)
    if command == "status":
        assert "2 runs: 2 done" in done.stdout
    if command == "cancel":
        assert "finished: cancelled 0 queued or running runs" in done.stdout
    if command == "plan":
        assert "remaining: ≈0 s of training" in done.stdout and "median of 2 runs of this study" in done.stdout


def _metric_steps(ledger: Ledger, run_id: str) -> list[int]:
    return sorted(m.step for m in ledger.client.get_metric_history(run_id, "train/loss"))


def test_submit_resumes_interrupted_runs_and_resubmission_skips_finished_ones(data_root, tmp_path):
    path = write_study(tmp_path, data_root, seeds=[0, 1], grid={"masking": ["random", "dirichlet"]},
                       report={"baseline": {"masking": "random"}, "metrics": ["train/loss"]})
    study = load_study(path)
    # One run was interrupted after a checkpoint, as a killed job would leave it.
    victim = study.runs[0]
    ledger = Ledger(study)
    record = ledger.prepare(victim, None, ledger.parent_id(), {})
    train(from_dict(victim.config),
          TrainOptions(evaluate_at_end=False, progress=False, until_step=2, open_tracker=run_tracker))
    assert state(ledger.record(record.run_id)) == "interrupted"

    started = time.monotonic()
    assert set(submit(study, progress=False).values()) == {"done"}
    print(f"4 local runs: {time.monotonic() - started:.1f} s")
    records = ledger.records()
    assert len(records) == 4 and records[victim.key].run_id == record.run_id  # the same MLflow run continued
    assert _metric_steps(ledger, record.run_id) == [1, 2, 3, 4]
    for run in study.runs:
        rec = records[run.key]
        assert rec.status == "FINISHED" and rec.tags["run_key"] == run.key
        assert rec.tags["masking"] == run.masking and rec.tags["family"] == run.family
        assert rec.tags["mlflow.parentRunId"] == ledger.parent_id() and rec.tags["seed"] == str(run.seed)
        assert {"config_hash", "code_version", "study"} <= set(rec.tags)
        assert (run.out_dir / "mlflow_run_id").read_text() == rec.run_id
    assert "done" in status_table(study) and "4/4" in status_table(study)

    folders = {p: p.stat().st_mtime_ns for p in (tmp_path / "s" / "runs").rglob("*")}
    assert set(submit(load_study(path), progress=False).values()) == {"done"}
    assert ledger.records() == records  # no new MLflow run, nothing re-logged
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "s" / "runs").rglob("*")} == folders
    assert len(list((tmp_path / "s" / "submitit").glob("*/*_submitted.pkl"))) == 4  # nothing launched again


def test_a_sigkilled_run_resumes_on_resubmission_with_every_metric_step_logged_once(data_root, tmp_path, capsys,
                                                                                    monkeypatch, stop_afterwards):
    from ablate import progress

    steps, log_every = 120, 2
    base = {**TINY, "data.root": str(data_root[0]), "train.steps": steps, "train.log_every": log_every,
            "train.checkpoint_every": 10}
    path = write_study(tmp_path, data_root, base=base, seeds=[0, 1])
    study = load_study(path)
    victim = study.runs[0]
    submitter = subprocess.Popen([sys.executable, "-m", "ablate.cli", "submit", str(path)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop_afterwards(path, submitter)

    def logged_past_a_checkpoint() -> bool:
        assert submitter.poll() is None, "the submitter ended before the run could be killed"
        checkpoint = RunFolder(victim.out_dir).latest_checkpoint()
        if checkpoint is None or int(checkpoint.name.removeprefix("step_")) < 20:
            return False
        history = (victim.out_dir / "history.jsonl").read_text().splitlines()
        return json.loads(history[-1])["step"] > int(checkpoint.name.removeprefix("step_"))  # replayed on resume

    wait_for(logged_past_a_checkpoint, "checkpoint with steps logged after it")
    submitter.kill()  # first, so that no submitter sees the run fail and retries it
    submitter.wait()
    controller = int(Ledger(study).records()[victim.key].tags["job_id"])  # submitit's local job controller
    (trainer,) = children(controller)
    os.kill(trainer, signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(controller) or psutil.Process(controller).status() == "zombie",
              "end of the killed run's job")
    ledger = Ledger(study)
    run_id = ledger.records()[victim.key].run_id
    assert state(ledger.records()[victim.key]) == "interrupted"

    monkeypatch.setattr(progress, "on_terminal", lambda: True)  # bars, as a terminal gets them
    assert set(submit(load_study(path)).values()) == {"done"}
    shown = capsys.readouterr().err  # the study's bar and, under it, one bar per active run: step and loss
    assert re.search(rf"  {re.escape(victim.label)} s{victim.seed}: +\d+%.*\| *\d+/{steps} \[.*loss=\d\.\d{{3}}", shown)
    assert f"{study.name}: 100%" in shown
    client = ledger.client
    runs = client.search_runs([ledger.experiment_id], "tags.kind = 'run'")
    assert sorted(r.data.tags["run_key"] for r in runs) == sorted(r.key for r in study.runs)  # one per (config, seed)
    assert ledger.records()[victim.key].run_id == run_id  # the killed run went on in its MLflow run
    specs = DatasetSpec.load(data_root[0]).modalities
    every_step = list(range(log_every, steps + 1, log_every))
    for run in runs:
        lines = (study.dir / "runs" / run.data.tags["run_key"] / "history.jsonl").read_text().splitlines()
        history = [json.loads(line) for line in lines]
        assert [h["step"] for h in history] == every_step
        assert set(run.data.metrics) <= set(logged_metrics(specs))
        for key in run.data.metrics:
            logged = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
            # train/loss/<m> is logged at the steps whose batch had targets in m; everything else every time.
            expected = [h["step"] for h in history if key in h] if key.startswith("train/") else every_step
            assert logged == expected, (run.data.tags["run_key"], key)


def test_cancel_stops_the_running_run_and_the_waiting_submitter_launches_nothing_more(data_root, tmp_path, capsys,
                                                                                     stop_afterwards):
    base = {**TINY, "data.root": str(data_root[0]), "train.steps": 2000, "train.checkpoint_every": 50}
    path = write_study(tmp_path, data_root, base=base, seeds=[0, 1], executor={**LOCAL, "max_parallel": 1})
    first, second = load_study(path).runs
    submitter = subprocess.Popen([sys.executable, "-m", "ablate.cli", "submit", str(path)],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, **IN_BACKGROUND)
    stop_afterwards(path, submitter)
    wait_for(lambda: (first.out_dir / "history.jsonl").is_file(), "training step")

    assert main(["cancel", str(path)]) == 0
    assert "cancelled 1 queued or running runs" in capsys.readouterr().out
    out, _ = submitter.communicate(timeout=300)  # it returns instead of retrying or launching the second run
    assert submitter.returncode == EXIT_UNFINISHED == 3 and "cancelled; `ablate submit" in out
    records = Ledger(load_study(path)).records()
    assert records[first.key].status == "KILLED" and state(records[first.key]) == "interrupted"
    assert records[first.key].retries == 0 and second.key not in records
    assert len(list((tmp_path / "s" / "submitit").glob("*/*_submitted.pkl"))) == 1


def test_a_failing_run_is_retried_up_to_the_bound(data_root, tmp_path, capfd):
    broken = tmp_path / "broken"  # whole when the study is checked, broken before its job starts
    shutil.copytree(data_root[0], broken)
    path = write_study(tmp_path, data_root, base={**TINY, "data.root": str(broken)},
                       executor={**LOCAL, "max_retries": 1})
    study = load_study(path)
    (broken / "train" / "rgb.npy").unlink()
    assert list(submit(study, progress=False).values()) == ["failed"]
    said = capfd.readouterr()
    assert "failed: " in said.out + said.err and "rgb.npy" in said.out + said.err  # the cause, not just the log
    (record,) = Ledger(study).records().values()
    assert record.status == "FAILED" and record.retries == 1
    assert len(list((tmp_path / "s" / "submitit").glob("*/*_submitted.pkl"))) == 2  # first try + one retry

    assert list(submit(study, progress=False).values()) == ["failed"]  # retries spent: not launched
    assert Ledger(study).records()[record.tags["run_key"]].retries == 1
    assert len(list((tmp_path / "s" / "submitit").glob("*/*_submitted.pkl"))) == 2


def _trials(study_path: Path) -> list[optuna.trial.FrozenTrial]:
    return open_search(load_study(study_path)).get_trials()


def _outcomes(trials: list[optuna.trial.FrozenTrial]) -> dict[int, tuple]:
    return {t.number: (t.state.name, t.params, t.value, t.user_attrs.get("run_key")) for t in trials}


def test_a_pruned_search_survives_a_killed_submitter_and_ends_with_its_trial_count(data_root, tmp_path,
                                                                                   stop_afterwards):
    # Runs long enough (300 steps, 15-40 s) that the submitter, polling every second, sees a bad trial well
    # before its end (at its first logged steps). The random sampler with seed 1 draws lr 7e-5 and 2e-3 for
    # trials 0 and 1, then 1e-6 and 2e-5: trials 2 and 3 barely learn, and the median pruner stops them once
    # trials 0 and 1 are complete.
    base = {**TINY, "data.root": str(data_root[0]), "train.steps": 300, "train.log_every": 4,
            "train.checkpoint_every": 100, "train.warmup_steps": 0, "train.min_lr": 0.0}
    count = 6
    search = {"params": {"train.lr": {"type": "float", "low": 1e-6, "high": 3e-2, "log": True}}, "trials": count,
              "metric": "train/loss", "sampler": "random", "seed": 1, "pruner": "median", "prune_after_trials": 2}
    path = write_study(tmp_path, data_root, base=base, search=search)  # two trials at a time
    journal = tmp_path / "s" / "optuna.journal"
    command = [sys.executable, "-m", "ablate.cli", "submit", str(path)]
    submitter = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **IN_BACKGROUND)
    stop_afterwards(path, submitter)

    def pruned() -> bool:  # trials 2 or 3 are pruned while trials 4 and 5 are still to come: kill then
        assert submitter.poll() is None, "the search ended before it could be killed"
        return journal.exists() and any(t.state.name == "PRUNED" for t in _trials(path))

    wait_for(pruned, "a pruned trial", timeout_s=900)  # about 2 min quiet; over 5 at a load of 9
    submitter.kill()
    submitter.wait()
    before = {n: o for n, o in _outcomes(_trials(path)).items() if o[0] != "RUNNING"}

    restarted = subprocess.run(command, capture_output=True, text=True, timeout=600, **IN_BACKGROUND)
    assert restarted.returncode == 0, restarted.stderr
    trials = _trials(path)
    assert len(trials) == count and {t.state.name for t in trials} == {"COMPLETE", "PRUNED"}
    assert {n: o for n, o in _outcomes(trials).items() if n in before} == before  # nothing finished changed
    study = load_study(path)
    ledger = Ledger(study)
    runs = {r.data.tags["run_key"]: r for r in ledger.client.search_runs([ledger.experiment_id], "tags.kind = 'run'")}
    assert len(runs) == count and set(runs) == {t.user_attrs["run_key"] for t in trials}  # one MLflow run a trial
    for trial in trials:
        run = runs[trial.user_attrs["run_key"]]
        if trial.state.name == "PRUNED":
            assert run.info.status == "KILLED" and run.data.tags["pruned"] == "1"
            assert max(trial.intermediate_values) < base["train.steps"]  # stopped before its end
        else:
            assert run.info.status == "FINISHED" and trial.value == run.data.metrics["train/loss"]
    jobs = len(list((tmp_path / "s" / "submitit").glob("*/*_submitted.pkl")))

    journal.unlink()  # trials lost: MLflow's runs come back as trials (pruned ones pruned), nothing is re-run
    again = Search(study, progress=False).run().get_trials()

    def outcome(t: optuna.trial.FrozenTrial) -> tuple:
        return t.user_attrs["run_key"], t.state.name, t.params, t.value if t.state.name == "COMPLETE" else None

    assert sorted(map(outcome, again)) == sorted(map(outcome, trials))
    assert len(ledger.client.search_runs([ledger.experiment_id], "tags.kind = 'run'")) == count
    assert len(list((tmp_path / "s" / "submitit").glob("*/*_submitted.pkl"))) == jobs


def _http(url: str, body: dict | None = None) -> tuple[str, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.headers.get_content_type(), response.read()


CHROMIUM = "/usr/bin/chromium"  # scripts/debian-packages.sh chromium installs it


def _start_ui(study_file: Path, port: int, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ablate.cli", "ui", str(study_file), "--port", str(port),
                             "--no-browser"], stdout=log.open("w"), stderr=subprocess.STDOUT)


def test_ui_serves_the_study_runs_opens_on_its_runs_table_and_stops_every_process(finished_study, tmp_path):
    """The page opens on the study's training runs (not its collapsed parent run) with its report metric and the
    masking tag as columns, without a click; the server is MLflow's CLI and one uvicorn process (no job runner),
    its log in the study folder, the terminal told the address alone; SIGTERM stops every process."""
    from playwright.sync_api import sync_playwright

    study = load_study(finished_study)
    port, log = free_port(), tmp_path / "ui.log"
    elsewhere = finished_study.with_name("finished_moved_data.yaml")  # the same study, its data folder gone
    elsewhere.write_text(finished_study.read_text().replace(str(study.runs[0].config["data"]["root"]), "/gone"))
    server = _start_ui(elsewhere, port, log)
    api = f"http://127.0.0.1:{port}/api/2.0/mlflow"

    def printed() -> str | None:
        assert server.poll() is None, log.read_text()
        return next((line.split(": ", 1)[1].split(" (")[0] for line in log.read_text().splitlines()
                     if line.startswith("MLflow UI for finished: ")), None)

    try:
        url = wait_for(printed, "address of the UI")  # printed once it listens
        body = _http(f"{api}/experiments/get-by-name?experiment_name={study.name}")[1]
        experiment_id = json.loads(body)["experiment"]["experiment_id"]
        assert url == (f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
                       "&viewStateShareKey=ablate")
        _, body = _http(f"{api}/runs/search", {"experiment_ids": [experiment_id], "filter": "tags.kind = 'run'"})
        runs = json.loads(body)["runs"]
        tags = [{t["key"]: t["value"] for t in run["data"]["tags"]} for run in runs]
        assert sorted(t["run_key"] for t in tags) == sorted(run.key for run in study.runs)
        assert all(run["info"]["status"] == "FINISHED" for run in runs)
        assert all({m["key"]: m["step"] for m in run["data"]["metrics"]}["train/loss"] == 4 for run in runs)
        with sync_playwright() as playwright:  # the first page is the study's runs table, not the GenAI view
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url)
            # the training runs alone: the study's parent run (before, the one row they were folded under) is not one
            page.get_by_text(f"{len(runs)} matching runs").wait_for(timeout=60_000)
            for run in study.runs:  # every training run is a row of its own, none folded under the study's run
                page.get_by_role("link", name=f"{run.label} s{run.seed}", exact=True).wait_for(timeout=60_000)
            header = page.get_by_test_id(f"sort-header-{study.spec.report.metrics[0]}")  # train/loss
            header.wait_for(timeout=60_000)
            box = header.bounding_box()  # on the first screen: no scrolling, no "Columns" menu
            assert box is not None and box["x"] + box["width"] <= 1280 and box["y"] + box["height"] <= 800
            cells = page.get_by_role("gridcell").all_inner_texts()
            metric = study.spec.report.metrics[0]
            value = str(next(m["value"] for m in runs[0]["data"]["metrics"] if m["key"] == metric))[:4]
            assert any(cell.startswith(value) for cell in cells), cells
            page.get_by_test_id("sort-header-masking").wait_for(timeout=60_000)  # the preset's name, searchable
            browser.close()
        started = psutil.Process(server.pid).children(recursive=True)
        assert len(started) == 2, [p.cmdline() for p in started]  # `mlflow ui` and its one uvicorn process
        assert not any("huey" in " ".join(p.cmdline()) for p in started)  # no job runner
        terminal = log.read_text().splitlines()
        assert len(terminal) == 1 and f"server log: {study.dir / 'mlflow_ui.log'}" in terminal[0], terminal
        assert "Uvicorn running on" in (study.dir / "mlflow_ui.log").read_text()
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert server.returncode == 0
    assert not [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]  # none left behind
    assert "GET /" not in (study.dir / "mlflow_ui.log").read_text()  # no access log
    with pytest.raises(OSError):  # stopped: nothing listens any more
        _http(f"{api}/experiments/get-by-name?experiment_name={study.name}")


def test_ui_on_a_busy_port_fails_at_once(finished_study, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        start = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "ablate.cli", "ui", str(finished_study), "--port", str(port),
                               "--no-browser"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and time.monotonic() - start < 30
    assert f"ablate: error: port {port} on 127.0.0.1 is in use" in done.stderr


def test_ui_on_a_study_never_submitted_says_so_and_creates_nothing(data_root, tmp_path, capsys):
    path = write_study(tmp_path, data_root, name="never")
    assert main(["ui", str(path), "--no-browser"]) == 2
    assert "study 'never' has nothing recorded yet; `ablate submit" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_run_bars_say_evaluating_once_trained(data_root, tmp_path, monkeypatch):
    from ablate import progress
    from ablate.dispatch import Active

    monkeypatch.setattr(progress, "on_terminal", lambda: True)  # bars are drawn on a terminal only
    run = load_study(write_study(tmp_path, data_root)).runs[0]
    run.out_dir.mkdir(parents=True)
    history = run.out_dir / "history.jsonl"
    with progress.Progress("s", total=1, done=0, unit="run", evaluate=True) as shown:
        history.write_text(json.dumps({"step": 2, "train/loss": 3.0}) + "\n")
        shown.show({run.key: Active(run, "id", None)})
        bar = shown.run_bars[run.key]
        assert bar.postfix == "loss=3.000" and bar.n == 2
        history.write_text(json.dumps({"step": 4, "train/loss": 2.5}) + "\n")
        for _ in range(3):  # it keeps saying so while the job evaluates, and the count stays at its total
            shown.show({run.key: Active(run, "id", None)})
        assert bar.postfix == "evaluating" and bar.n == 4


def test_resubmitting_leaves_a_report_made_with_other_options_alone(finished_study, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # reports/ is where ablate runs
    table = tmp_path / "reports" / "finished" / "table.md"
    assert main(["report", str(finished_study), "--precision", "1", "--no-figures"]) == 0
    made = table.read_text()
    assert main(["submit", str(finished_study)]) == 0
    out = capsys.readouterr().out
    assert "reports/finished/ was made with other options than the study file's report section (precision=1)" in out
    assert table.read_text() == made
    assert main(["report", str(finished_study), "--no-figures"]) == 0  # the study file's options
    assert main(["submit", str(finished_study)]) == 0
    assert "report written to reports/finished/" in capsys.readouterr().out
