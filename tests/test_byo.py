"""Bring your own tokens, from the README alone: a hand-made folder (rgb on a 4x4 grid and a caption, 24 tokens
per sample) trains with the default preset, evaluates at budgets that fit it and reports; the cross-modal tasks
it cannot have are skipped with a note, and no figure is logged that was never drawn."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from ablate.cli import main
from model.tokenizers import EOS, PAD

SPEC = {"modalities": {"rgb": {"kind": "image", "vocab_size": 16, "grid": [4, 4]},
                       "caption": {"kind": "sequence", "vocab_size": 30, "max_len": 8}},
        "splits": {"train": 64, "val": 16}}
FIRST_WORD = 19  # ids below are [PAD], [EOS], [UNK] and the sentinels (model/tokenizers.py)
TRAIN = ["model=tiny", "train.steps=6", "train.batch_size=8", "train.log_every=2", "train.checkpoint_every=6",
         "eval.num_samples=16", "eval.batch_size=8"]


@pytest.fixture(scope="module")
def byo(tmp_path_factory) -> Path:
    """rgb: (N, 4, 4) ids in [0, 16); caption: (N, 8) words, then EOS, then PAD, as the README says."""
    root = tmp_path_factory.mktemp("byo")
    rng = np.random.default_rng(0)
    for split, n in SPEC["splits"].items():
        (root / split).mkdir()
        np.save(root / split / "rgb.npy", rng.integers(0, 16, (n, 4, 4)))
        length = rng.integers(2, 7, n)
        words = rng.integers(FIRST_WORD, 30, (n, 8))
        caption = np.where(np.arange(8) < length[:, None], words, PAD)
        caption[np.arange(n), length] = EOS
        np.save(root / split / "caption.npy", caption)
    (root / "spec.json").write_text(json.dumps(SPEC))
    return root


def test_the_default_preset_trains_and_evaluates_a_bring_your_own_folder(byo, tmp_path, capsys):
    out, store = tmp_path / "run", tmp_path / "mlflow.db"
    assert main(["train", f"data.root={byo}", *TRAIN, f"train.out_dir={out}", f"tracking.uri=sqlite:///{store}"]) == 0
    printed = capsys.readouterr().out
    config = yaml.safe_load((out / "config.yaml").read_text())["masking"]
    assert config["name"] == "dirichlet" and (config["input_budget"], config["target_budget"]) == (16, 8)
    assert config["input_alphas"] == config["target_alphas"] == {"caption": 0.2, "rgb": 0.2}
    results = json.loads((out / "eval.json").read_text())
    assert set(results) == {f"{k}/{m}" for k in ("loss", "acc") for m in ("caption", "rgb", "mean")}
    assert all(math.isfinite(v) for v in results.values()), results
    assert "not evaluated: rgb_to_semseg: needs ground truth, which only a generated data set has" in printed
    assert not (out / "generation.png").exists()

    client = MlflowClient(f"sqlite:///{store}")
    run = client.get_run((out / "mlflow_run_id").read_text())
    assert run.info.status == "FINISHED"
    assert "eval/loss/mean" in run.data.metrics and "probe" in run.data.tags["eval_skipped"]
    assert "generation.png" not in [a.path for a in client.list_artifacts(run.info.run_id)]


def test_alphas_over_the_folders_modalities_replace_the_presets(byo, tmp_path):
    out = tmp_path / "run"
    assert main(["train", f"data.root={byo}", *TRAIN, f"train.out_dir={out}", "tracking.enabled=false",
                 "masking.input_alphas={rgb: 1.0, caption: 0.1}", "--no-eval"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["masking"]["input_alphas"] == {"caption": 0.1, "rgb": 1.0}


def test_a_study_on_a_bring_your_own_folder_trains_evaluates_and_reports(byo, tmp_path, monkeypatch, capsys):
    study = {"name": "byo", "base": {"data.root": str(byo), **dict(o.split("=") for o in TRAIN)},
             "seeds": [0, 1], "grid": {"masking": ["random", "dirichlet", "block"]}, "executor": {"kind": "debug"},
             "report": {"baseline": {"masking": "random"}, "metrics": ["eval/loss/mean", "eval/acc/mean"]}}
    study["base"] = {k: yaml.safe_load(v) for k, v in study["base"].items()}
    (tmp_path / "studies").mkdir()
    path = tmp_path / "studies" / "byo.yaml"
    path.write_text(yaml.safe_dump(study))
    monkeypatch.chdir(tmp_path)  # reports/ is relative to where ablate runs
    assert main(["submit", str(path)]) == 0
    table = (tmp_path / "reports" / "byo" / "table.md").read_text()
    for family in ("random", "dirichlet", "block"):
        assert re.search(rf"\| {family} +\| (\*\*)?[0-9.]+ ± [0-9.]+", table), table
    assert "NaN" not in table
    assert (tmp_path / "reports" / "byo" / "masks.png").is_file()


def test_a_run_whose_evaluation_fails_ends_failed_in_mlflow(byo, tmp_path, monkeypatch):
    import model.evaluate
    from ablate.tracking import run_tracker
    from model.config import compose
    from model.train import TrainOptions, train

    def broken(*args, **kwargs):
        raise RuntimeError("evaluation broke")

    monkeypatch.setattr(model.evaluate, "evaluate", broken)
    out, store = tmp_path / "run", tmp_path / "mlflow.db"
    cfg = compose([f"data.root={byo}", *TRAIN, f"train.out_dir={out}", f"tracking.uri=sqlite:///{store}"])
    with pytest.raises(RuntimeError, match="evaluation broke"):
        train(cfg, TrainOptions(progress=False, open_tracker=run_tracker))
    run = MlflowClient(f"sqlite:///{store}").get_run((out / "mlflow_run_id").read_text())
    assert run.info.status == "FAILED"  # not left RUNNING


def test_the_readme_says_what_a_folder_holds():
    """The shapes, the reserved ids and how budgets follow a folder, as the code has them."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("### Bring your own tokens")[1].split("\n## ")[0]
    for claim in ("(N, H, W)", "(N, max_len)", f"`[PAD]` is {PAD}", f"`[EOS]` is {EOS}", "input_budget: auto",
                  "{default: 0.2}", "128 input and 64 target tokens", "two thirds"):
        assert claim in section, claim
