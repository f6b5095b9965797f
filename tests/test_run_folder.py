"""``model/run_folder.py``: a run folder's files, written and read back, and old folders still read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from model.run_folder import TAIL_BYTES, RunFolder

ROOT = Path(__file__).parents[1]


def test_reading_the_latest_step_loads_no_torch():
    """``ablate status`` reads it for every run of a study, and must stay light."""
    probe = "import sys, model.run_folder; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_latest_checkpoint_of_a_folder_written_before_named_states(tmp_path):
    """An older trainer's folder: positional state files, a pointer with a newline, an older step left over."""
    folder = RunFolder(tmp_path)
    for step in (2, 3):
        (tmp_path / "checkpoints" / f"step_{step:07d}").mkdir(parents=True)
        (tmp_path / "checkpoints" / f"step_{step:07d}" / "custom_checkpoint_0.pkl").write_bytes(b"")
    (tmp_path / "checkpoints" / "latest").write_text("step_0000003\n")
    assert folder.latest_step() == 3
    assert folder.latest_checkpoint() == tmp_path / "checkpoints" / "step_0000003" == folder.checkpoint(3)
    assert folder.saved_checkpoints() == [folder.checkpoint(2), folder.checkpoint(3)]


def test_no_checkpoint_yet_and_a_pointer_to_a_missing_one(tmp_path):
    folder = RunFolder(tmp_path / "run")
    assert folder.latest_step() is None and folder.latest_checkpoint() is None
    folder.checkpoint(5).mkdir(parents=True)
    folder.point_latest(folder.checkpoint(5))
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text() == "step_0000005"
    assert folder.latest_step() == 5 and folder.latest_checkpoint() == folder.checkpoint(5)
    assert sorted(p.name for p in folder.checkpoints.iterdir()) == ["latest", "step_0000005"]  # no temporary left
    folder.checkpoint(5).rmdir()
    assert folder.latest_checkpoint() is None and folder.latest_step() == 5  # the pointer alone says the step


def test_resuming_drops_the_history_logged_after_the_checkpoint_and_a_cut_off_record(tmp_path):
    folder = RunFolder(tmp_path)
    history = folder.open_history(0)
    for step in (1, 2, 3, 4):
        history.append(step, {"train/loss": 1.0 / step})
    history.close()
    with folder.history.open("a") as f:
        f.write('{"step": 5, "train/lo')  # killed mid-write
    history = folder.open_history(2)  # resumed from the checkpoint at step 2
    assert [json.loads(line)["step"] for line in folder.history.read_text().splitlines()] == [1, 2]
    history.append(3, {"train/loss": 0.3})
    assert folder.last_logged() == (3, {"train/loss": 0.3})  # flushed at once: a status reads it while it runs
    history.close()
    assert [json.loads(line)["step"] for line in (tmp_path / "history.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_the_last_record_is_read_from_the_tail_past_a_half_written_line(tmp_path):
    folder = RunFolder(tmp_path)
    assert folder.last_logged() is None
    history = folder.open_history(0)
    long_run = 4 * TAIL_BYTES // len(json.dumps({"step": 1, "train/loss": 0.5}))
    for step in range(1, long_run + 1):
        history.append(step, {"train/loss": 0.5, "train/lr": 1e-3})
    history.close()
    assert folder.last_logged() == (long_run, {"train/loss": 0.5, "train/lr": 1e-3})
    with folder.history.open("a") as f:
        f.write('{"step": 99999, "train/loss": 0.')  # a write under way
    assert folder.last_logged()[0] == long_run
    folder.history.write_text('{"step": 1, "train/loss": 2.0}\n["not", "a", "record"]\n{"loss": 1.0}\n')
    assert folder.last_logged() == (1, {"train/loss": 2.0})


def test_the_mlflow_run_id_round_trip(tmp_path):
    folder = RunFolder(tmp_path / "runs" / "abc-s0")
    assert folder.read_mlflow_run_id() is None
    folder.write_mlflow_run_id("0123abcd")  # before the trainer made the folder: the submitter's ledger does
    assert folder.read_mlflow_run_id() == "0123abcd"
    assert (tmp_path / "runs" / "abc-s0" / "mlflow_run_id").read_text() == "0123abcd"
    (tmp_path / "runs" / "abc-s0" / "mlflow_run_id").write_text("0123abcd\n")  # by hand, with a newline
    assert folder.read_mlflow_run_id() == "0123abcd"


def test_the_config_and_the_evaluation_round_trip(tmp_path):
    from model.config import compose

    folder = RunFolder(tmp_path / "run")
    cfg = compose(["model=tiny", "train.steps=7"])
    folder.write_config(cfg)
    assert folder.read_config() == cfg
    folder.write_eval({"loss/mean": 1.5})
    assert folder.read_eval() == {"loss/mean": 1.5} == json.loads((tmp_path / "run" / "eval.json").read_text())


@pytest.mark.parametrize("attribute, relative", [
    ("config", "config.yaml"), ("history", "history.jsonl"), ("eval", "eval.json"), ("generation", "generation.png"),
    ("mask_budgets", "masks/mask_budgets.png"), ("mask_frequency", "masks/mask_frequency.png"),
    ("lease", "lease.json"), ("lease_lock", "lease.lock"), ("checkpoints", "checkpoints"),
])
def test_the_names_on_disk_are_those_older_folders_have(tmp_path, attribute, relative):
    """Renaming one would leave every run folder (and MLflow store) written before unreadable."""
    assert getattr(RunFolder(tmp_path), attribute) == tmp_path / relative


def test_reports_read_the_mask_figure_where_trainers_of_every_version_logged_it():
    assert RunFolder.MASK_FREQUENCY_ARTIFACT == "masks/mask_frequency.png"
