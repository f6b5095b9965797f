"""Study files for tests: the tiny model, a few steps, the local executor, two runs at a time."""

from __future__ import annotations

from pathlib import Path

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
