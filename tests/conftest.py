"""Shared fixtures: one small generated data set per test session."""

from __future__ import annotations

import pytest

from model.build import build
from model.config import compose


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """A small but real data set (default scene and tokenizer settings, fewer scenes)."""
    root = tmp_path_factory.mktemp("data") / "scenes"
    cfg = compose([f"data.root={root}", "data.train_size=3000", "data.val_size=300"]).data
    fidelity = build(cfg, progress=False)
    return root, fidelity
