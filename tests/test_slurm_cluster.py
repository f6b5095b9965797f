"""End-to-end checks of submitit against the real single-node SLURM cluster (slurm/start_cluster.sh).

The session fixture starts the cluster when it does not answer (the first start installs the
Debian packages: about 20 s; an already running cluster costs nothing). Every wait has a timeout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

submitit = pytest.importorskip("submitit")
import cloudpickle  # noqa: E402  (a submitit dependency)

# One single-node cluster: its tests take turns on one test worker (with two workers: -n 2 --dist loadgroup).
pytestmark = pytest.mark.xdist_group("slurm")

REPO = Path(__file__).resolve().parents[1]
START_SCRIPT = REPO / "slurm" / "start_cluster.sh"
PARTITION = "debug"
ACCOUNT = os.environ.get("NANO4M_SLURM_ACCOUNT", "nano4m")  # registered by start_cluster.sh
JOB_TIMEOUT_S = 60  # any one wait on jobs

# The job's interpreter cannot import this test module (pytest put it on sys.path, the job does
# not), so its functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _run(*cmd: str) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _cluster_answers() -> bool:
    """slurmctld is up (`scontrol ping` fails at once when it is not, `sinfo` only after ~10 s),
    the partition has a usable node, and sacct (slurmdbd), which submitit relies on, answers."""
    if shutil.which("scontrol") is None:
        return False
    ping = _run("scontrol", "ping")
    if ping is None or "is UP" not in ping.stdout:
        return False
    sinfo = _run("sinfo", "-h", "-p", PARTITION, "-o", "%T")
    if sinfo is None or sinfo.returncode != 0 or not any(
        s.rstrip("~#") in {"idle", "mixed", "allocated", "completing"} for s in sinfo.stdout.split()
    ):
        return False
    sacct = _run("sacct", "-n", "-X", "-S", "now", "-o", "JobID")
    return sacct is not None and sacct.returncode == 0


def _can_start_cluster() -> bool:
    """start_cluster.sh needs Debian (dpkg/apt-get) and root, or passwordless sudo."""
    if shutil.which("dpkg-query") is None or shutil.which("apt-get") is None:
        return False
    if os.geteuid() == 0:
        return True
    return shutil.which("sudo") is not None and subprocess.run(
        ["sudo", "-n", "true"], capture_output=True, timeout=10
    ).returncode == 0


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """Make sure the local cluster is up; returns the partition name."""
    if not _cluster_answers():
        if not _can_start_cluster():
            pytest.skip("no SLURM cluster answers and slurm/start_cluster.sh cannot run here "
                        "(needs Debian, apt-get and root)")
        try:
            res = subprocess.run(
                ["bash", str(START_SCRIPT)], capture_output=True, text=True, timeout=900,
            )
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"slurm/start_cluster.sh did not finish in 900 s:\n{e.stdout}\n{e.stderr}")
        if res.returncode != 0:
            pytest.fail(f"slurm/start_cluster.sh failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        sys.stderr.write(res.stdout)
    assert _cluster_answers(), "the cluster was started but does not answer (scontrol/sinfo/sacct)"
    return PARTITION


def _executor(folder: Path, partition: str, **params) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    assert executor.cluster == "slurm"
    executor.update_parameters(
        slurm_partition=partition,
        timeout_min=5,
        nodes=1,
        tasks_per_node=1,
        cpus_per_task=1,
        name="nano4m-test",
        **params,
    )
    return executor


def _wait(jobs, timeout: float = JOB_TIMEOUT_S, until=lambda job: job.done(force_check=True)):
    """Poll until `until(job)` holds for every job; fail (never hang) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        pending = [job for job in jobs if not until(job)]
        if not pending:
            return
        if time.monotonic() > deadline:
            states = {job.job_id: job.state for job in pending}
            pytest.fail(f"jobs not there after {timeout} s: {states}")
        time.sleep(0.5)


def _sacct_state(job) -> str:
    """The job's state as sacct reports it now (forces a sacct call; `job.state` may be cached)."""
    return job.get_info(mode="force").get("State", "UNKNOWN")


def _wait_state(jobs, prefix: str, timeout: float = JOB_TIMEOUT_S) -> None:
    """sacct lags the job by 1-2 s: a job can be done (result file written) while still UNKNOWN."""
    _wait(jobs, timeout, until=lambda job: _sacct_state(job).startswith(prefix))


def _square_in_slurm(x: int) -> tuple[int, dict[str, str]]:
    keys = ("SLURM_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_PARTITION", "SLURM_JOB_ACCOUNT")
    return x * x, {k: os.environ.get(k, "") for k in keys}


def _sleep(seconds: float) -> str:
    time.sleep(seconds)
    return "not cancelled"


def test_single_job(slurm_cluster: str, tmp_path: Path) -> None:
    executor = _executor(tmp_path, slurm_cluster, slurm_account=ACCOUNT, mem_gb=1)
    job = executor.submit(_square_in_slurm, 7)
    _wait([job])
    value, env = job.result()
    assert value == 49
    assert env["SLURM_JOB_ID"] == job.job_id
    assert env["SLURM_JOB_PARTITION"] == slurm_cluster
    assert env["SLURM_JOB_ACCOUNT"] == ACCOUNT
    _wait_state([job], "COMPLETED")


def test_job_array(slurm_cluster: str, tmp_path: Path) -> None:
    executor = _executor(tmp_path, slurm_cluster, slurm_array_parallelism=2)
    with executor.batch():
        jobs = [executor.submit(_square_in_slurm, i) for i in range(3)]
    array_ids = {job.job_id.split("_")[0] for job in jobs}
    assert len(array_ids) == 1, [job.job_id for job in jobs]  # one array, three tasks
    array_id = array_ids.pop()
    assert sorted(job.job_id for job in jobs) == [f"{array_id}_{i}" for i in range(3)]
    _wait(jobs)
    results = [job.result() for job in jobs]
    assert [value for value, _ in results] == [0, 1, 4]
    assert [env["SLURM_ARRAY_TASK_ID"] for _, env in results] == ["0", "1", "2"]
    _wait_state(jobs, "COMPLETED")


def test_cancelled_array_reports_cancelled(slurm_cluster: str, tmp_path: Path) -> None:
    # Parallelism 1: task 0 runs while task 1 is still pending when the array is cancelled.
    executor = _executor(tmp_path, slurm_cluster, slurm_array_parallelism=1)
    with executor.batch():
        jobs = [executor.submit(_sleep, 300) for _ in range(2)]
    array_id = jobs[0].job_id.split("_")[0]
    _wait_state(jobs[:1], "RUNNING")
    # Cancel the whole array: in Slurm 22.05 cancelling one task of a pending array loses the
    # record of that task in sacct.
    subprocess.run(["scancel", array_id], check=True, timeout=10)
    _wait(jobs)
    _wait_state(jobs, "CANCELLED")  # "CANCELLED by 0"
    for job in jobs:
        assert job.state.startswith("CANCELLED"), (job.job_id, job.state)
        # (job.result() would raise UncompletedJobError, but only after waiting 15 s for a
        # result file that a cancelled job never writes.)
        assert not job.paths.result_pickle.exists()


def test_start_cluster_counts_a_busy_node_as_up(slurm_cluster: str) -> None:
    """With every CPU of the node taken, the smoke job cannot run: the script checks the daemons, says the node
    is busy, exits 0 and leaves no smoke job queued (it used to wait a minute and fail)."""
    cpus = _run("sinfo", "-h", "-N", "-o", "%c").stdout.split()[0]
    filler = subprocess.run(["sbatch", "--parsable", "-p", PARTITION, "-N", "1", "-n", "1", "-c", cpus, "-t", "2",
                             "-J", "nano4m-filler", "-o", "/dev/null", "--wrap", "sleep 120"],
                            capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    try:
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while _run("squeue", "-h", "-j", filler, "-o", "%T").stdout.strip() != "RUNNING":
            assert time.monotonic() < deadline, "the filler job never started"
            time.sleep(0.3)
        started = time.monotonic()
        done = subprocess.run(["bash", str(START_SCRIPT), "--check"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "the node is busy with other jobs" in done.stdout + done.stderr
        assert time.monotonic() - started < 30
        assert "nano4m-smoke" not in _run("squeue", "-h", "-o", "%j").stdout
    finally:
        subprocess.run(["scancel", filler], capture_output=True)
