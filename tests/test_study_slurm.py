"""Studies on the real single-node SLURM cluster (slurm/start_cluster.sh): job arrays, requeue on timeout, 2 tasks."""

from __future__ import annotations

import subprocess
import time

from study_files import TINY, write_study
from test_slurm_cluster import ACCOUNT, slurm_cluster  # noqa: F401  (the session fixture)

from ablate.dispatch import Dispatcher, submit
from ablate.ledger import Ledger
from ablate.study import load_study

TIMEOUT_S = 120


def slurm_executor(partition: str, **extra) -> dict:
    return {"kind": "slurm", "partition": partition, "account": ACCOUNT, "timeout_min": 5, "max_parallel": 2,
            "threads_per_run": 1, **extra}


def test_a_study_is_one_job_array_and_completes(slurm_cluster, data_root, tmp_path):  # noqa: F811
    path = write_study(tmp_path, data_root, grid={"masking": ["random", "dirichlet"]},
                       executor=slurm_executor(slurm_cluster))
    study = load_study(path)
    assert set(submit(study, wait=True, progress=False).values()) == {"done"}
    records = Ledger(study).records()
    job_ids = sorted(r.tags["job_id"] for r in records.values())
    array = job_ids[0].split("_")[0]
    assert job_ids == [f"{array}_0", f"{array}_1"]
    assert all(r.status == "FINISHED" and r.tags["executor"] == "slurm" for r in records.values())


def _wait(condition, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, f"no {what} after {TIMEOUT_S} s"
        time.sleep(0.3)


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


def test_a_timed_out_job_is_requeued_and_resumes_the_same_mlflow_run(slurm_cluster, data_root, tmp_path):  # noqa: F811
    base = {**TINY, "data.root": str(data_root[0]), "train.steps": 100, "train.checkpoint_every": 10}
    path = write_study(tmp_path, data_root, base=base, executor=slurm_executor(slurm_cluster))
    run, ledger, dispatcher, job = _launch_single_run(path)
    run_id = (run.out_dir / "mlflow_run_id").read_text()
    _wait(lambda: (run.out_dir / "checkpoints" / "latest").exists(), "checkpoint")
    job._interrupt(timeout=True)  # USR2, as SLURM sends before the time limit: checkpoint() and requeue
    _wait(lambda: _squeue_state(job.job_id) == "PENDING", "requeue")
    # Slurm holds a requeued job back for about two minutes (its begin time); let it start now.
    subprocess.run(["scontrol", "update", f"JobId={job.job_id}", "StartTime=now"], check=True, timeout=30)
    ended: list = []
    _wait(lambda: ended.extend(dispatcher.poll()) or ended, "end of the job")
    assert ended == [(run, "done")]

    assert "this job is timed-out" in job.paths.stderr.read_text()
    records = ledger.records()
    assert [r.run_id for r in records.values()] == [run_id] and records[run.key].status == "FINISHED"
    steps = sorted({m.step for m in ledger.client.get_metric_history(run_id, "train/loss")})
    assert steps == list(range(1, 101))


def test_two_tasks_train_one_run(slurm_cluster, data_root, tmp_path):  # noqa: F811
    # dirichlet can leave a modality out of one process's slice: DDP must cope (find_unused_parameters).
    base = {**TINY, "data.root": str(data_root[0]), "masking": "dirichlet"}
    path = write_study(tmp_path, data_root, base=base, executor=slurm_executor(slurm_cluster, tasks_per_node=2))
    run, ledger, dispatcher, job = _launch_single_run(path)
    ended: list = []
    try:
        _wait(lambda: ended.extend(dispatcher.poll()) or ended, "end of the job")
    finally:
        job.cancel(check=False)
    assert ended == [(run, "done")]
    assert len(job.results()) == 2  # one result per task
    (record,) = ledger.records().values()
    assert record.status == "FINISHED"
    # Accelerate saves one RNG state per process: the two tasks were one data-parallel run.
    checkpoint = run.out_dir / "checkpoints" / (run.out_dir / "checkpoints" / "latest").read_text()
    assert (checkpoint / "random_states_0.pkl").exists() and (checkpoint / "random_states_1.pkl").exists()
