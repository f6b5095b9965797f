"""Study files for tests: the tiny model, a few steps, the local executor, two runs at a time; and waiting
for what a study's runs do, with a bound."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

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
