"""Shared fixtures: one small generated data set and one finished study per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
from study_files import write_study

from ablate.dispatch import submit
from ablate.study import load_study
from model.build import build
from model.config import compose


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """A small but real data set (default scene and tokenizer settings, fewer scenes)."""
    root = tmp_path_factory.mktemp("data") / "scenes"
    cfg = compose([f"data.root={root}", "data.train_size=3000", "data.val_size=300"]).data
    fidelity = build(cfg, progress=False)
    return root, fidelity


@pytest.fixture(scope="session")
def finished_study(data_root, tmp_path_factory) -> Path:
    """A study of two tiny runs (two seeds), submitted on the local executor and finished."""
    path = write_study(tmp_path_factory.mktemp("studies"), data_root, name="finished", seeds=[0, 1])
    assert set(submit(load_study(path), progress=False).values()) == {"done"}
    return path
