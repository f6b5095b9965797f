"""Studies on the real single-node SLURM cluster (slurm/start_cluster.sh): job arrays, requeue on timeout and
preemption, cancelled arrays, 2 tasks."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from study_files import TINY, wait_for, write_study
from submitit.slurm.slurm import SlurmJobEnvironment
from test_slurm_cluster import ACCOUNT, slurm_cluster  # noqa: F401  (the session fixture)

from ablate.cli import EXIT_FAILED, EXIT_REFUSED, EXIT_UNFINISHED
from ablate.dispatch import Dispatcher, submit
from ablate.executors import EXECUTORS
from ablate.ledger import Ledger
from ablate.states import state
from ablate.study_file import load_study

# One single-node cluster: its tests take turns on one test worker (with two workers: -n 2 --dist loadgroup).
pytestmark = pytest.mark.xdist_group("slurm")

TIMEOUT_S = 120


def slurm_executor(partition: str, **extra) -> dict:
    return {"kind": "slurm", "partition": partition, "account": ACCOUNT, "timeout_min": 5, "max_parallel": 2,
            "threads_per_run": 1, **extra}


def test_a_study_is_one_job_array_completes_and_submitting_again_launches_nothing(
        slurm_cluster, data_root, tmp_path):  # noqa: F811
    path = write_study(tmp_path, data_root, grid={"masking": ["random", "dirichlet"]}, seeds=[0, 1],
                       executor=slurm_executor(slurm_cluster))
    study = load_study(path)
    assert set(submit(study, wait=True, progress=False).values()) == {"done"}
    records = Ledger(study).records()
    job_ids = sorted(r.tags["job_id"] for r in records.values())
    array = job_ids[0].split("_")[0]
    assert job_ids == [f"{array}_{i}" for i in range(4)]  # 2 configs x 2 seeds, one array
    assert all(r.status == "FINISHED" and r.tags["executor"] == "slurm" for r in records.values())
    jobs = list((tmp_path / "s" / "submitit").rglob("*_submitted.pkl"))

    assert set(submit(load_study(path), wait=True, progress=False).values()) == {"done"}
    assert Ledger(study).records() == records  # no new MLflow run, nothing re-logged
    assert list((tmp_path / "s" / "submitit").rglob("*_submitted.pkl")) == jobs  # no job submitted


def _squeue_state(job_id: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True).stdout.strip()


def _launch_single_run(path):
    """Launch the one run of a study file; -> (run, ledger, dispatcher, submitit job)."""
    study = load_study(path)
    (run,) = study.runs
    ledger = Ledger(study)
    dispatcher = Dispatcher(study, ledger)
    dispatcher.launch([run], {})
    return run, ledger, dispatcher, dispatcher.active[run.key].job


LONG = {**TINY, "train.steps": 100, "train.checkpoint_every": 10}


@pytest.fixture(scope="module")
def uninterrupted(slurm_cluster, data_root, tmp_path_factory):  # noqa: F811
    """The final metrics and train/loss history of the interruption tests' run, trained without interruption."""
    path = write_study(tmp_path_factory.mktemp("uninterrupted"), data_root,
                       base={**LONG, "data.root": str(data_root[0])}, executor=slurm_executor(slurm_cluster))
    run, ledger, dispatcher, _ = _launch_single_run(path)
    ended: list = []
    wait_for(lambda: ended.extend(dispatcher.poll()) or ended, "end of the uninterrupted job")
    assert ended == [(run, "done")]
    record = ledger.records()[run.key]
    return run.key, record.metrics, _history(ledger, record.run_id)


def _history(ledger: Ledger, run_id: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in ledger.client.get_metric_history(run_id, "train/loss")]


def _time_limit_warning(job) -> None:
    """USR2 through SLURM, as it warns of the time limit, landing mid-run however slowly it is forwarded: the
    job's training processes are stopped (SIGSTOP) until the signal is pending in them, then continued. (A run
    of the tiny model can end in the seconds a loaded machine takes to forward it; SLURM refuses to signal a job
    it suspended itself.)"""
    listed = subprocess.run(["scontrol", "listpids", job.job_id], capture_output=True, text=True, check=True,
                            timeout=30).stdout.splitlines()[1:]
    trainers = [int(line.split()[0]) for line in listed if line.split()[2] == "0"]  # srun's step, not the batch
    assert trainers, listed
    for pid in trainers:
        os.kill(pid, signal.SIGSTOP)
    try:
        job._interrupt(timeout=True)
        wait_for(lambda: all(_pending(pid, signal.SIGUSR2) for pid in trainers), "USR2 to reach the job")
    finally:
        for pid in trainers:
            os.kill(pid, signal.SIGCONT)


def _pending(pid: int, signum: int) -> bool:
    """Whether ``signum`` waits to be delivered to process ``pid`` (its SigPnd or ShdPnd mask)."""
    masks = re.findall(r"^(?:SigPnd|ShdPnd):\s*([0-9a-f]+)$", Path(f"/proc/{pid}/status").read_text(), re.M)
    return any(int(mask, 16) >> (signum - 1) & 1 for mask in masks)


def _preempt(job) -> None:
    """What ``job._interrupt(timeout=False)`` does, SIGTERM (which submitit ignores) then USR2, but in that order.

    ``_interrupt`` sends the two by back-to-back ``scancel --signal`` calls, and slurmd can deliver USR2 first;
    the late SIGTERM then also hits the ``scontrol requeue`` that submitit's USR2 handler is running, and the
    job fails instead of being requeued (seen on this cluster). A real preemption signals SIGTERM first.
    """
    subprocess.run(["scancel", "--signal", "SIGTERM", job.job_id], check=True, timeout=30)
    wait_for(lambda: "Bypassing signal SIGTERM" in job.paths.stdout.read_text(), "SIGTERM to reach the job")
    subprocess.run(["scancel", "--signal", SlurmJobEnvironment.USR_SIG, job.job_id], check=True, timeout=30)


@pytest.mark.parametrize("timeout", [True, False], ids=["timeout", "preemption"])
def test_an_interrupted_job_is_requeued_resumes_and_ends_as_if_never_interrupted(
        slurm_cluster, data_root, tmp_path, uninterrupted, timeout):  # noqa: F811
    # submitit calls it a timeout when the job has used most of its time limit (for a 5-minute limit: always),
    # else a preemption; either way it checkpoints and requeues.
    executor = slurm_executor(slurm_cluster, timeout_min=5 if timeout else 30)
    path = write_study(tmp_path, data_root, base={**LONG, "data.root": str(data_root[0])}, executor=executor)
    run, ledger, dispatcher, job = _launch_single_run(path)
    run_id = (run.out_dir / "mlflow_run_id").read_text()
    wait_for(lambda: (run.out_dir / "checkpoints" / "latest").exists(), "checkpoint")
    if timeout:
        _time_limit_warning(job)  # USR2, as SLURM sends signal_delay_s before the time limit
    else:
        _preempt(job)
    wait_for(lambda: _squeue_state(job.job_id) == "PENDING", "requeue")
    # Slurm holds a requeued job back for about two minutes (its begin time); let it start in 2 s. Not at once:
    # the old allocation's credential is revoked to the second, and a start within that second is killed
    # ("Job credential revoked").
    subprocess.run(["scontrol", "update", f"JobId={job.job_id}", "StartTime=now+2"], check=True, timeout=30)
    ended: list = []
    wait_for(lambda: ended.extend(dispatcher.poll()) or ended, "end of the job")
    assert ended == [(run, "done")]

    assert f"this job is {'timed-out' if timeout else 'preempted'}" in job.paths.stderr.read_text()
    records = ledger.records()
    assert [r.run_id for r in records.values()] == [run_id] and records[run.key].status == "FINISHED"
    key, metrics, history = uninterrupted
    assert run.key == key  # the same config and seed
    assert _history(ledger, run_id) == history  # every step once, with the values of the uninterrupted run
    timing = ("train/tokens_per_s", "train/tflops")
    assert {k: v for k, v in records[run.key].metrics.items() if k not in timing} == \
        {k: v for k, v in metrics.items() if k not in timing}  # losses, learning rate, mask statistics


def test_cancelling_the_whole_array_ends_the_waiting_submitter_and_nothing_is_retried(
        slurm_cluster, data_root, tmp_path):  # noqa: F811
    base = {**TINY, "data.root": str(data_root[0]), "train.steps": 5000}
    executor = slurm_executor(slurm_cluster, array_parallelism=1)  # the second task waits in the queue
    path = write_study(tmp_path, data_root, base=base, grid={"masking": ["random", "dirichlet"]}, executor=executor)
    waiter = subprocess.Popen([sys.executable, "-m", "ablate.cli", "submit", str(path), "--wait"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    study = load_study(path)
    first = study.runs[0]
    try:
        wait_for(lambda: (first.out_dir / "history.jsonl").is_file(), "first training step")
        job_ids = sorted(r.tags["job_id"] for r in Ledger(study).records().values())
        array = job_ids[0].split("_")[0]
        subprocess.run(["scancel", array], check=True, timeout=30)
        cancelled = time.monotonic()
        out, _ = waiter.communicate(timeout=TIMEOUT_S)  # it returns: no waiter hangs on a cancelled array
        noticed_s = time.monotonic() - cancelled
    finally:
        waiter.kill()
    assert noticed_s <= 30  # its own polling, not submitit's backoff of up to minutes
    assert waiter.returncode == EXIT_UNFINISHED == 3 and "cancelled; `ablate submit" in out  # not finished
    wait_for(lambda: not _squeue_state(array), "cancelled array to leave the queue")  # COMPLETING counts as running
    records = Ledger(study).records()
    assert sorted(r.tags["job_id"] for r in records.values()) == job_ids  # nothing relaunched
    assert all(r.status == "KILLED" and r.retries == 0 and state(r) == "interrupted" for r in records.values())
    # What a later submitter asks; sacct lags the controller by a second or two. The task that ran is CANCELLED
    # there; the one cancelled while pending may have no record at all (Slurm 22.05), and a later submitter then
    # goes by MLflow's KILLED: no task may read as failed (that would be retried).
    wait_for(lambda: EXECUTORS["slurm"].stopped_id(job_ids[0]), "sacct to call the running task cancelled")
    assert all(EXECUTORS["slurm"].stopped_id(job_id) is not False for job_id in job_ids)


def test_a_one_minute_limit_is_refused_with_the_reason_and_nothing_is_queued(slurm_cluster, data_root, tmp_path):  # noqa: F811
    executor = slurm_executor(slurm_cluster, timeout_min=1, signal_delay_s=30)
    path = write_study(tmp_path, data_root, executor=executor)
    done = subprocess.run([sys.executable, "-m", "ablate.cli", "submit", str(path), "--wait"], capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    assert done.returncode == EXIT_REFUSED == 2
    assert ("executor: timeout_min=1 (60 s) with signal_delay_s=30 leaves a job sure of 0 s of training before "
            "each requeue (SLURM may send the warning up to 60 s earlier than asked); allowed: timeout_min >= 3"
            ) in done.stderr
    assert not (tmp_path / "s" / "submitit").exists()


def test_a_run_that_fails_for_good_is_said_last_and_submit_wait_exits_1(slurm_cluster, data_root, tmp_path):  # noqa: F811
    setup = ["echo 'module: cuda/99 not found' >&2", "exit 3"]  # a job that fails before python starts
    path = write_study(tmp_path, data_root, executor=slurm_executor(slurm_cluster, max_retries=0, setup=setup))
    (run,) = load_study(path).runs
    done = subprocess.run([sys.executable, "-m", "ablate.cli", "submit", str(path), "--wait"], capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    assert done.returncode == EXIT_FAILED == 1, done.stderr
    lines = done.stderr.splitlines()
    said = next(line for line in lines if line.startswith(f"run {run.key} ({run.label}) failed: "))
    assert said.split(" failed: ", 1)[1].startswith("the job ended without a result (state FAILED")  # no log path
    head = lines.index(f"run {run.key} ({run.label} s0) failed after 0 retries: its log says no cause")
    assert lines[head + 1].startswith("  its log ") and lines[head + 2] == "    module: cuda/99 not found"
    assert lines[-1].startswith("s: 1 of 1 runs failed for good (exit 1)")


def test_two_tasks_train_one_run(slurm_cluster, data_root, tmp_path):  # noqa: F811
    # dirichlet can leave a modality out of one process's slice: DDP must cope (find_unused_parameters).
    base = {**TINY, "data.root": str(data_root[0]), "masking": "dirichlet"}
    path = write_study(tmp_path, data_root, base=base, executor=slurm_executor(slurm_cluster, tasks_per_node=2))
    run, ledger, dispatcher, job = _launch_single_run(path)
    ended: list = []
    try:
        wait_for(lambda: ended.extend(dispatcher.poll()) or ended, "end of the job")
    finally:
        job.cancel(check=False)
    assert ended == [(run, "done")]
    assert len(job.results()) == 2  # one result per task
    (record,) = ledger.records().values()
    assert record.status == "FINISHED"
    # Accelerate saves one RNG state per process: the two tasks were one data-parallel run.
    checkpoint = run.out_dir / "checkpoints" / (run.out_dir / "checkpoints" / "latest").read_text()
    assert (checkpoint / "random_states_0.pkl").exists() and (checkpoint / "random_states_1.pkl").exists()


def _stop_controller() -> None:
    """Stop slurmctld by its PID (the jobs it started keep running under slurmd)."""
    pid = int(open("/run/slurm/slurmctld.pid").read())
    subprocess.run(["kill", str(pid)], check=True)
    wait_for(lambda: subprocess.run(["scontrol", "ping"], capture_output=True, text=True).stdout.count("DOWN"),
             "slurmctld down", timeout_s=30)


def test_with_the_controller_down_a_second_submitter_launches_nothing_and_fails_nothing(
        slurm_cluster, data_root, tmp_path, capsys):  # noqa: F811
    from ablate.cli import EXIT_UNFINISHED, main

    path = write_study(tmp_path, data_root, base={**LONG, "train.steps": 5000, "data.root": str(data_root[0])},
                       executor=slurm_executor(slurm_cluster))
    run, ledger, dispatcher, job = _launch_single_run(path)
    wait_for(lambda: _squeue_state(job.job_id) == "RUNNING", "the job running")
    before = ledger.records()[run.key]
    try:
        _stop_controller()
        started = time.monotonic()
        assert main(["status", str(path)]) == 0
        status_s = time.monotonic() - started
        assert "unknown" in capsys.readouterr().out and status_s < 15
        assert main(["submit", str(path)]) == EXIT_UNFINISHED  # the run is unknown: nothing to launch, nothing done
        assert "1 run(s) unknown: their scheduler does not answer" in capsys.readouterr().err
        after = ledger.records()
        assert list(after) == [run.key] and after[run.key].run_id == before.run_id  # no second MLflow run
        assert after[run.key].tags["job_id"] == before.tags["job_id"] and after[run.key].status != "FAILED"
        assert len(list((tmp_path / "s" / "submitit").rglob("*_submitted.pkl"))) == 1  # no second job
    finally:
        subprocess.run(["bash", "slurm/start_cluster.sh"], capture_output=True, timeout=120)
        subprocess.run(["scancel", job.job_id], capture_output=True)
    # Once the controller answers again (and Slurm.QUIET_S has passed), the run's state is known again.
    assert wait_for(lambda: (s := state(ledger.records()[run.key])) != "unknown" and s, "a known state",
                    timeout_s=60) in ("running", "queued", "interrupted")


def _segments(job) -> list[tuple[int, int]]:
    """The steps each of a job's starts trained ("train: trained steps A-B" in its log, requeues appended)."""
    return [(int(a), int(b)) for a, b in re.findall(r"train: trained steps (\d+)-(\d+)", job.paths.stderr.read_text())]


def _start_soon(job) -> None:
    """Let a requeued job start in 2 s instead of SLURM's two-minute hold (see the requeue test above)."""
    wait_for(lambda: _squeue_state(job.job_id) == "PENDING", "requeue")
    subprocess.run(["scontrol", "update", f"JobId={job.job_id}", "StartTime=now+2"], check=True, timeout=30)


def test_usr2_mid_run_checkpoints_that_step_the_requeued_job_resumes_there_and_status_shows_it_queued(
        slurm_cluster, data_root, tmp_path, uninterrupted, capsys):  # noqa: F811
    from ablate.cli import main

    # No periodic checkpoint before the end: without one at the signal, the requeued job would start over.
    base = {**LONG, "train.checkpoint_every": 1000, "data.root": str(data_root[0])}
    path = write_study(tmp_path, data_root, base=base, executor=slurm_executor(slurm_cluster))
    run, ledger, dispatcher, job = _launch_single_run(path)
    wait_for(lambda: run.progress()[0] >= 20, "20 steps")
    _time_limit_warning(job)  # USR2, as SLURM sends signal_delay_s before the time limit
    wait_for(lambda: _squeue_state(job.job_id) == "PENDING", "requeue")
    at = run.checkpoint_step()
    assert at is not None and at >= 20 and f"train: SIGUSR2 at step {at}: checkpoint saved there" in \
        job.paths.stderr.read_text()
    assert main(["status", str(path)]) == 0
    (row,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith(f"| {run.key}")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:5] == ["queued", f"{at}/100", str(at)]  # state, step, the checkpoint it resumes from
    _start_soon(job)
    ended: list = []
    wait_for(lambda: ended.extend(dispatcher.poll()) or ended, "end of the job")
    assert ended == [(run, "done")]
    assert _segments(job) == [(1, at), (at + 1, 100)]  # every step trained once
    assert f"train: resuming at step {at}" in job.paths.stderr.read_text()
    key, metrics, history = uninterrupted
    assert _history(ledger, ledger.records()[run.key].run_id) == history


def test_a_run_that_exhausts_its_requeues_is_reported_failed_with_its_cause_and_retried(
        slurm_cluster, data_root, tmp_path, capsys):  # noqa: F811
    base = {**LONG, "data.root": str(data_root[0])}
    path = write_study(tmp_path, data_root, base=base,
                       executor=slurm_executor(slurm_cluster, max_timeouts=1, max_retries=1))
    run, ledger, dispatcher, job = _launch_single_run(path)
    wait_for(lambda: run.checkpoint_step(), "checkpoint")
    _time_limit_warning(job)  # the one timeout allowed: requeued, its MLflow run KILLED (it goes on)
    _start_soon(job)
    wait_for(lambda: "train: resuming at step" in job.paths.stderr.read_text(), "the requeued job's start")
    _time_limit_warning(job)  # the second: submitit gives up ("timed-out too many times")
    ended: list = []
    wait_for(lambda: ended.extend(dispatcher.poll()) or ended, "end of the retried run", timeout_s=300)
    assert ended == [(run, "done")]
    said = capsys.readouterr().err
    assert f"run {run.key} ({run.label}) failed: " in said and "timed-out too many times" in said
    assert "relaunched (retry 1 of 1)" in said and "was cancelled" not in said
    (record,) = ledger.records().values()
    assert record.status == "FINISHED" and record.retries == 1
    assert EXECUTORS["slurm"].stopped_id(job.job_id) is False  # sacct: failed, not cancelled


def test_a_second_job_on_a_leased_run_folder_exits_without_touching_it(
        slurm_cluster, data_root, tmp_path, uninterrupted):  # noqa: F811
    from ablate.dispatch import TrainJob

    path = write_study(tmp_path, data_root, base={**LONG, "data.root": str(data_root[0])},
                       executor=slurm_executor(slurm_cluster))
    run, ledger, dispatcher, job = _launch_single_run(path)
    wait_for(lambda: run.checkpoint_step(), "checkpoint")
    config = run.out_dir / "config.yaml"
    written = config.stat().st_mtime_ns
    # The first job paused (SIGSTOP: alive, its lease held and fresh) until the second has ended: otherwise a slow
    # start of the second (two test workers on 2 cores) can come after the first job's last step.
    subprocess.run(["scontrol", "suspend", job.job_id], check=True, timeout=30)
    try:
        twin = dispatcher.executor.submit(TrainJob(run.config, False))  # a scheduler's mistake: two jobs, one run
        wait_for(twin.done, "the second job's end")
    finally:
        subprocess.run(["scontrol", "resume", job.job_id], check=True, timeout=30)
    error = str(twin.exception())
    assert "RunFolderLeased" in error and f"another trainer holds this run folder (job {job.job_id}," in error
    assert config.stat().st_mtime_ns == written and "train: " not in twin.paths.stderr.read_text()
    ended: list = []
    wait_for(lambda: ended.extend(dispatcher.poll()) or ended, "end of the first job")
    assert ended == [(run, "done")]
    steps = [json.loads(line)["step"] for line in (run.out_dir / "history.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 101))  # one trainer wrote it
    key, metrics, history = uninterrupted
    assert _history(ledger, ledger.records()[run.key].run_id) == history


def test_a_job_array_tracked_through_an_mlflow_server_reports_as_one_on_sqlite_does(
        slurm_cluster, data_root, tmp_path, mlflow_server, capsys):  # noqa: F811
    from ablate.cli import main

    tables = {}
    for name, tracking in (("on_sqlite", {}), ("on_server", {"uri": mlflow_server.uri})):
        path = write_study(tmp_path, data_root, name=name, grid={"masking": ["random", "dirichlet"]},
                           executor=slurm_executor(slurm_cluster), tracking=tracking)
        study = load_study(path)
        assert set(submit(study, wait=True, progress=False).values()) == {"done"}
        assert len(Ledger(study).records()) == 2
        capsys.readouterr()
        assert main(["report", str(path), "--out", str(tmp_path / "reports" / name)]) == 0
        tables[name] = capsys.readouterr().out.replace(name, "NAME")
    assert not (tmp_path / "on_server" / "mlflow.db").exists()
    # digits masked, and first the hashes (code version, study file) they are in
    shape = {name: re.sub(r"\d", "#", re.sub(r"\b[0-9a-f]{7,}\b", "HASH", table)).splitlines()
             for name, table in tables.items()}
    assert shape["on_server"] == shape["on_sqlite"] and len(shape["on_sqlite"]) > 4


def test_each_round_of_a_race_is_one_job_array(slurm_cluster, data_root, tmp_path):  # noqa: F811
    from ablate.race import submit_race

    variants = {"slow": {"train.lr": 1e-7, "train.min_lr": 1e-8}, "fast": {"train.lr": 3e-3},
                "faster": {"train.lr": 3.3e-3}}
    base = {**TINY, "data.root": str(data_root[0]), "train.steps": 60, "train.log_every": 10,
            "train.checkpoint_every": 30}
    path = write_study(tmp_path, data_root, base=base, variants=variants, executor=slurm_executor(slurm_cluster),
                       race={"metric": "train/loss", "min_seeds": 3, "max_seeds": 4})
    study = load_study(path)
    states, race = submit_race(study, wait=True, progress=False)
    slow = next(run.config_hash for run in study.runs if run.settings["variant"] == "slow")
    assert race.status != "racing" and race.eliminated[slow].round == 1
    records = Ledger(study).records()
    arrays = {}  # array id -> seeds of its tasks
    for run in study.runs:
        if run.key in records:
            array, task = records[run.key].tags["job_id"].split("_")
            arrays.setdefault(array, []).append((run.seed, int(task)))
    first, second = sorted(arrays, key=int)
    assert sorted(task for _, task in arrays[first]) == list(range(9))  # 3 configurations x seeds 0-2
    assert {seed for seed, _ in arrays[first]} == {0, 1, 2}
    assert sorted(arrays[second]) == [(3, 0), (3, 1)]  # the two left, seed 3, one array
    assert set(states.values()) == {"done"} and len(states) == 11
