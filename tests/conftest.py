"""Shared fixtures: one small generated data set and one finished study per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
from postgres import postgres, postgres_server  # noqa: F401  (fixtures)
from study_files import stop_afterwards, write_study  # noqa: F401  (stop_afterwards: a fixture)
from tracking_server import mlflow_server  # noqa: F401  (fixture)

from ablate.dispatch import submit
from ablate.study_file import load_study
from model.build import build
from model.config import compose


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory):
    """The user's cache (``ablate plan``'s timed speeds) in a folder of the session's, for its subprocesses too."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


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


@pytest.fixture(scope="session")
def explore_study(data_root, tmp_path_factory):
    """A finished tiny study for the explorer: three masking families and a preset (dirichlet_4m), two
    configurations of random, no evaluation (the objective is the first report metric, train/loss). Returns its
    study file."""
    import yaml

    folder = tmp_path_factory.mktemp("explore")
    study = {
        "name": "explore",
        "base": {"model": "tiny", "data.root": str(data_root[0]), "train.steps": 6, "train.batch_size": 8,
                 "train.log_every": 1, "train.checkpoint_every": 6},
        "variants": {"random": {"masking": "random"}, "random-lr": {"masking": "random", "train.lr": 0.02},
                     "block": {"masking": "block"}, "hard": {"masking": "hard"},
                     "dirichlet_4m": {"masking": "dirichlet_4m"}},
        "evaluate": False,
        "executor": {"kind": "debug"},  # in this process: no interpreter start per run
        "report": {"metrics": ["train/loss"]},
    }
    path = folder / "explore.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    states = submit(load_study(path), progress=False)
    assert set(states.values()) == {"done"}, states
    return path


@pytest.fixture(scope="session")
def explore_server(explore_study, tmp_path_factory):
    """``ablate explore`` over ``explore_study`` with the CLI's defaults (127.0.0.1, one torch thread) on a free
    port. Yields (base URL, the Explorer)."""
    import torch

    from ablate.explorer.explorer import Explorer
    from ablate.explorer.server import running

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    explorer = Explorer(load_study(explore_study), reports=tmp_path_factory.mktemp("reports"))
    with running(explorer) as url:
        yield url, explorer
    torch.set_num_threads(threads)
