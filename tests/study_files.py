"""Study files for tests: the tiny model, a few steps, the local executor, two runs at a time; waiting for
what a study's runs do, with a bound; and submitters started as processes, stopped with their jobs."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psutil
import pytest
import yaml

TINY = {"model": "tiny", "train.steps": 4, "train.batch_size": 8, "train.log_every": 1, "train.checkpoint_every": 2}
LOCAL = {"kind": "local", "max_parallel": 2, "threads_per_run": 1}


def write_study(tmp_path: Path, data_root, name: str = "s", **sections) -> Path:
    """``<tmp_path>/<name>.yaml``: the tiny model on the test data set; ``sections`` replace the defaults."""
    root, _ = data_root
    study = {"name": name, "base": {**TINY, "data.root": str(root)}, "evaluate": False, "executor": LOCAL,
             "report": {"metrics": ["train/loss"]}, **sections}
    path = tmp_path / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


T = TypeVar("T")


def wait_for(condition: Callable[[], T], what: str, timeout_s: float = 120) -> T:
    """Poll ``condition`` until it returns something true, and return that; fail (never hang) after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        assert time.monotonic() < deadline, f"no {what} after {timeout_s} s"
        time.sleep(0.2)
    return result


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (a local job's controller: its trainer)."""
    return [p.pid for p in psutil.Process(pid).children()]


# A submitter started as a shell without job control (a script, CI) starts a background command
# (`ablate submit ... &`): with SIGINT ignored, which the processes it starts would inherit, while submitit
# cancels a local job with SIGINT.
IN_BACKGROUND = {"preexec_fn": lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)}


@pytest.fixture
def stop_afterwards() -> Iterator[Callable[[Path, subprocess.Popen], None]]:
    """Register (study file, submitter): at teardown, after a failure too, the submitter is killed and the
    study's live jobs are cancelled, so no training outlives its test."""
    from ablate.ledger import Ledger
    from ablate.states import cancel_live_jobs
    from ablate.study_file import load_study

    started = []
    yield lambda path, submitter: started.append((path, submitter))
    for path, submitter in started:
        submitter.kill()
        submitter.wait()
        cancel_live_jobs(list(Ledger(load_study(path), create=False).records().values()))
