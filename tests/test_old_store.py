"""A study store written by older code stays readable: plan, status, submit and report over it find every run
done, launch nothing and report the numbers it recorded.

``fixtures/store_bb24df5.tar.gz`` is the study ``old`` (random vs dirichlet_4m, tiny model, 4 steps, 2 seeds, with
evaluation) as the code of main at bb24df5 wrote it, with the checkpoints' weights and optimizer states left out
(only ``latest`` and ``states.pt`` kept) to keep the file small; ``expected/summary.csv`` is that code's report.
MLflow records artifact locations as absolute paths, so it is unpacked where it was written.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from ablate.cli import main

FIXTURE = Path(__file__).parent / "fixtures" / "store_bb24df5.tar.gz"
WRITTEN_AT = Path("/tmp/nano4m-old-store")  # where bb24df5 wrote it (its experiment's artifact location)


@pytest.fixture(scope="module")
def old_store(data_root):
    """The unpacked store, its data set the session's (built with the settings it was trained on)."""
    shutil.rmtree(WRITTEN_AT, ignore_errors=True)
    WRITTEN_AT.mkdir(parents=True)
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(WRITTEN_AT, filter="data")
    (WRITTEN_AT / "data").mkdir()
    (WRITTEN_AT / "data" / "scenes").symlink_to(data_root[0])
    yield WRITTEN_AT
    shutil.rmtree(WRITTEN_AT, ignore_errors=True)


def _ablate(capsys, *argv: str) -> str:
    assert main(list(argv)) in (0, None)
    return capsys.readouterr().out


def test_an_old_store_reads_as_done_and_resubmitting_it_launches_nothing(old_store, capsys, monkeypatch):
    monkeypatch.chdir(old_store)
    histories = {p: p.read_text() for p in old_store.glob("old/runs/*/history.jsonl")}
    assert len(histories) == 4

    status = _ablate(capsys, "status", "old.yaml")
    assert "4 runs: 4 done" in status
    assert status.count("4/4") == 4  # the step each read from its history
    assert "dirichlet_4m" in status and "random" in status

    assert "≈0 s of training" in _ablate(capsys, "plan", "old.yaml")

    _ablate(capsys, "submit", "old.yaml")
    assert {p: p.read_text() for p in histories} == histories  # nothing trained again
    assert sorted(p.name for p in (old_store / "old" / "runs").iterdir()) == sorted(p.parent.name for p in histories)


def test_an_old_store_reports_the_numbers_it_recorded(old_store, capsys, monkeypatch):
    monkeypatch.chdir(old_store)
    _ablate(capsys, "report", "old.yaml", "--no-figures")
    cols = ["config", "metric", "mean", "std", "n"]
    new = pd.read_csv(old_store / "reports" / "old" / "summary.csv")[cols].sort_values(cols[:2], ignore_index=True)
    old = pd.read_csv(old_store / "expected" / "summary.csv")[cols].sort_values(cols[:2], ignore_index=True)
    pd.testing.assert_frame_equal(new, old)
    assert len(new) == 4  # two configurations, two metrics
