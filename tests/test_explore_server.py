"""``ablate explore``'s server over a real tiny study: the best run per family, what a prediction holds,
bad requests answered with 4xx and a message, nothing served from outside the report folder, localhost."""

from __future__ import annotations

import base64
import http.client
import io
import json
import math
import shutil
from types import SimpleNamespace
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image
from study_files import write_study

from ablate.cli import parser
from ablate.explorer.checkpoints import best_runs, objective
from ablate.explorer.explorer import ExploreError, Explorer
from ablate.ledger import Ledger
from ablate.schema import StudyError
from ablate.study_file import load_study
from model.run_folder import RunFolder

FAMILIES = ["random", "block", "hard"]
BASE = {"given": ["rgb"], "targets": ["semseg", "caption"], "strategies": FAMILIES}


def call(url: str, method: str, path: str, body: bytes | dict | None = None, headers: dict | None = None):
    """A raw HTTP request (the path is sent exactly as written) -> (status, decoded JSON or bytes)."""
    where = urlsplit(url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=60)
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    is_json = response.getheader("content-type", "").startswith("application/json")
    return response.status, json.loads(data) if is_json else data


def png_pixels(data_url: str) -> np.ndarray:
    assert data_url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))


def test_each_family_is_its_best_finished_run_by_the_objective(explore_study, explore_server):
    study = load_study(explore_study)
    goal = objective(study)
    assert (goal.metric, goal.direction, goal.source) == ("train/loss", "minimize", "report.metrics[0]")
    records = Ledger(study, create=False).records()
    losses = {run.key: records[run.key].metric("train/loss") for run in study.runs}
    chosen = best_runs(study)
    assert list(chosen) == FAMILIES
    randoms = [run.key for run in study.runs if run.masking == "random"]
    assert len(randoms) == 2 and chosen["random"].run.key == min(randoms, key=losses.get)
    assert chosen["random"].value == min(losses[k] for k in randoms)

    _, explorer = explore_server
    assert explorer.strategies["hard"].masking.seen.any()  # hard's loss map came back from its checkpoint


def test_a_preset_speaks_under_its_own_name(data_root, tmp_path, monkeypatch):
    """dense and dirichlet_4m (presets of random and dirichlet) are strategies of their own, by the study's name;
    a request names them so, or by their family where the study has one masking of it."""
    import ablate.explorer.checkpoints as checkpoints

    grid = {"masking": ["random", "dense", "dirichlet_4m"]}
    study = load_study(write_study(tmp_path, data_root, name="presets", seeds=[0, 1], grid=grid))
    loss = {"random": 3.0, "dense": 2.0, "dirichlet_4m": 1.0}
    done = [SimpleNamespace(run=run, state="done", record=SimpleNamespace(metric=lambda _, v=loss[run.masking] +
                                                                          run.seed: v)) for run in study.runs]
    monkeypatch.setattr(checkpoints, "rows", lambda _: done)
    monkeypatch.setattr(RunFolder, "latest_checkpoint", lambda folder: folder.path)  # no training: none to find
    chosen = best_runs(study)
    assert list(chosen) == grid["masking"]
    assert [(c.run.family, c.run.seed, c.value) for c in chosen.values()] == [("random", 0, 3.0), ("random", 0, 2.0),
                                                                             ("dirichlet", 0, 1.0)]
    explorer = Explorer.__new__(Explorer)  # its request checks, without loading models
    explorer.strategies = {name: SimpleNamespace(name=name, choice=choice) for name, choice in chosen.items()}
    asked = explorer.chosen(["dirichlet_4m", "dense", "random"])  # the preset's name, as the study says it
    assert [(n, s.name) for n, s in asked.items()] == [("dirichlet_4m",) * 2, ("dense",) * 2, ("random",) * 2]
    assert explorer.chosen(["dirichlet"])["dirichlet"].name == "dirichlet_4m"  # the family of one preset: that one
    with pytest.raises(ExploreError, match=r"names a strategy twice"):
        explorer.chosen(["dirichlet", "dirichlet_4m"])
    del explorer.strategies["random"]  # random's family now has dense alone: random means it
    assert explorer.chosen(["random"])["random"].name == "dense"
    explorer.strategies["sparse"] = SimpleNamespace(name="sparse", choice=SimpleNamespace(
        run=SimpleNamespace(family="random")))
    has = r"this study has \['dense', 'dirichlet_4m', 'sparse'\]"
    several = r"\(a family of several: name one of \{'random': \['dense', 'sparse'\]\}\)"
    with pytest.raises(ExploreError, match=rf"unknown \['random'\]; {has} {several}"):
        explorer.chosen(["random"])


def test_objective_of_a_search_and_of_score_metrics(data_root, tmp_path):
    search = {"params": {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2}}, "trials": 2,
              "metric": "eval/acc/mean", "direction": "maximize"}
    study = load_study(write_study(tmp_path, data_root, name="q", search=search, evaluate=True))
    assert objective(study).direction == "maximize" and objective(study).source == "search.metric"
    for metric, direction in (("eval/rgb_to_semseg/miou", "maximize"), ("eval/rgb_to_depth/abs_rel", "minimize")):
        grid = load_study(write_study(tmp_path, data_root, name="g", report={"metrics": [metric]}, evaluate=True))
        assert objective(grid).direction == direction


def test_a_study_with_no_finished_run_is_refused_with_a_message(data_root, tmp_path):
    study = load_study(write_study(tmp_path, data_root, name="empty"))
    with pytest.raises(StudyError, match=r"no finished run with a checkpoint and a value of 'train/loss'"):
        Explorer(study)


def test_the_server_binds_localhost_unless_asked(explore_server):
    url, _ = explore_server
    assert urlsplit(url).hostname == "127.0.0.1"  # the fixture serves with server()'s defaults
    assert parser().parse_args(["explore", "s"]).host == "127.0.0.1"
    assert parser().parse_args(["explore", "s", "--host", "0.0.0.0"]).host == "0.0.0.0"


def test_a_prediction_holds_every_strategy_side_by_side(explore_server):
    url, explorer = explore_server
    status, out = call(url, "POST", "/api/predict", BASE)
    assert status == 200, out
    assert out["targets"] == ["semseg", "caption"] and list(out["strategies"]) == FAMILIES
    scene = out["scene"]
    assert scene["label"] == "held-out scene 0" and png_pixels(scene["truth"]["rgb"]["png"]).shape == (32, 32, 3)
    keys = None
    for name, column in out["strategies"].items():
        assert column["masking"] == column["family"] == name  # these three are families' own presets
        assert column["run"] == explorer.strategies[name].choice.run.key
        semseg = column["predictions"]["semseg"]
        assert png_pixels(semseg["png"]).shape == (32, 32, 3)
        assert len(semseg["confidence"]) == 64 and all(0 <= c <= 1 for c in semseg["confidence"])
        caption = column["predictions"]["caption"]
        assert len(caption["confidence"]) == len(caption["words"]) <= 24
        attention = column["attention"]
        keys = keys or attention["keys"]
        assert attention["keys"] == keys == {"modality": ["rgb"] * 64, "position": list(range(64))}
        assert all(math.isclose(sum(row), 1, abs_tol=0.01) for row in attention["encoder"])
        assert all(row is not None and math.isclose(sum(row), 1, abs_tol=0.01) for row in attention["cross"]["semseg"])
        assert sum(row is not None for row in attention["cross"]["caption"]) == len(caption["words"]) + 1  # + EOS
        masks = column["training_masks"]
        assert set(masks) == {"rgb", "depth", "semseg", "caption", "boxes"}
        assert not any(i and t for m in masks.values() for i, t in zip(m["input"], m["target"]))
    # The same question gets the same answer.
    assert call(url, "POST", "/api/predict", BASE)[1]["strategies"] == out["strategies"]


def test_painted_cells_are_hidden_and_in_painted_and_the_rest_kept(explore_server):
    url, _ = explore_server
    hidden = [0, 1, 8, 9, 27]
    status, out = call(url, "POST", "/api/predict", {**BASE, "strategies": ["block"], "hidden": hidden, "layer": 0})
    assert status == 200, out
    assert out["targets"] == ["rgb", "semseg", "caption"] and out["scene"]["hidden"] == {"rgb": hidden}
    column = out["strategies"]["block"]
    rgb = column["predictions"]["rgb"]
    kept = [c for c in range(64) if c not in hidden]
    assert all(rgb["confidence"][c] == 1 for c in kept)  # given tokens are kept as they are
    given, painted = png_pixels(out["scene"]["decoded"]["rgb"]["png"]), png_pixels(rgb["png"])
    for cell in kept:
        r, c = divmod(cell, 8)
        assert (given[4 * r : 4 * r + 4, 4 * c : 4 * c + 4] == painted[4 * r : 4 * r + 4, 4 * c : 4 * c + 4]).all()
    attention = column["attention"]
    assert sorted(attention["keys"]["position"]) == kept  # hidden cells are not encoder inputs
    assert [i for i, row in enumerate(attention["cross"]["rgb"]) if row is not None] == hidden


def test_scenes_from_a_seed_and_from_a_typed_caption(explore_server):
    url, _ = explore_server
    new = {**BASE, "strategies": ["random"], "scene": {"source": "seed", "seed": 7}}
    a, again, other = (call(url, "POST", "/api/predict", r)[1] for r in (new, new, {**new, "scene": {
        "source": "seed", "seed": 8}}))
    assert a["scene"]["label"] == "new scene from seed 7"
    assert a["scene"]["truth"] == again["scene"]["truth"] != other["scene"]["truth"]

    typed = {"source": "caption", "caption": "Large red circle and small blue square."}
    status, out = call(url, "POST", "/api/predict", {"scene": typed, "strategies": ["random"], "given": ["caption"],
                                                     "targets": ["rgb"]})
    assert status == 200, out
    assert out["scene"]["decoded"]["caption"]["words"] == "large red circle and small blue square .".split()
    assert list(out["scene"]["truth"]) == ["caption"] and out["strategies"]["random"]["training_masks"] is None
    assert png_pixels(out["strategies"]["random"]["predictions"]["rgb"]["png"]).shape == (32, 32, 3)


@pytest.mark.parametrize("body, status, message", [
    (b"{not json", 422, "the body is not valid JSON: Expecting property name"),
    ({**BASE, "scene": {"index": "3"}}, 422, "scene.index: Input should be a valid integer"),
    ({**BASE, "scene": {"index": -1}}, 422, "scene.index: Input should be greater than or equal to 0"),
    ({**BASE, "stategies": FAMILIES}, 422, "stategies: Extra inputs are not permitted"),
    ({**BASE, "steps": 0}, 422, "steps: Input should be greater than or equal to 1"),
    ({**BASE, "strategies": []}, 422, "strategies: List should have at least 1 item"),
    ({**BASE, "strategies": ["nope"]}, 422, "strategies: unknown ['nope']; this study has ['random', 'block', 'hard']"),
    ({**BASE, "targets": ["sound"]}, 422, "targets: unknown modalities ['sound']; the study's data has"),
    ({**BASE, "scene": {"index": 300}}, 422, "scene.index=300: the validation split has scenes 0..299"),
    ({**BASE, "hidden": [64]}, 422, "hidden: cells [64] outside the 8x8 grid (0..63)"),
    ({**BASE, "given": ["caption"], "targets": ["rgb"], "hidden": [1]}, 422,
     "hidden: painting hides cells of a given image modality"),
    ({**BASE, "targets": ["rgb"]}, 422, "targets: ['rgb'] also given; to have a given image predicted, paint"),
    ({**BASE, "targets": []}, 422, "targets: nothing to predict"),
    ({**BASE, "layer": 2}, 422, "layer: layer 2: the model has 2 layers (0..1, or -1 for the last)"),
    ({**BASE, "scene": {"source": "caption", "caption": "a red cat"}}, 422, "unknown words ['a', 'cat']"),
    ({**BASE, "scene": {"source": "caption", "caption": "red circle"}}, 422,
     "given: typed caption has no ['rgb']; it has ['caption']"),
    ({**BASE, "scene": {"source": "caption", "caption": "x" * 301}}, 422, "scene.caption: String should have at most"),
    ({**BASE, "hidden": list(range(5000))}, 422, "hidden: List should have at most 4096 items"),
    ({**BASE, "scene": {"source": "caption", "caption": "x" * 100_000}}, 413, "request body of"),
])
def test_bad_requests_get_a_4xx_with_a_message(explore_server, body, status, message):
    url, _ = explore_server
    got, out = call(url, "POST", "/api/predict", body)
    assert got == status and message in out["error"], out
    assert call(url, "GET", "/api/info")[0] == 200  # still serving


def test_a_body_without_a_length_and_unknown_routes_are_refused(explore_server):
    url, _ = explore_server
    where = urlsplit(url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    conn.putrequest("POST", "/api/predict")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    conn.send(b"2\r\n{}\r\n0\r\n\r\n")
    response = conn.getresponse()
    assert response.status == 411 and b"Content-Length" in response.read()
    conn.close()
    assert call(url, "GET", "/api/nothing")[0] == 404
    assert call(url, "POST", "/api/features", {"strategies": FAMILIES, "attribute": "mood"})[0] == 422


def test_features_project_held_out_scenes_per_strategy(explore_server):
    url, explorer = explore_server
    status, out = call(url, "POST", "/api/features", {"strategies": ["random", "hard"], "attribute": "objects"})
    assert status == 200, out
    assert out["categories"] == [str(n) for n in sorted(set(explorer.feature_scenes.present.sum(1)))]
    assert len(out["labels"]) == 300
    for column in out["strategies"].values():
        assert len(column["points"]) == 300 and len(column["scene"]) == 2
    assert out["strategies"]["random"]["points"] != out["strategies"]["hard"]["points"]
    _, colors = call(url, "POST", "/api/features", {"strategies": ["random"], "attribute": "leftmost color"})
    assert set(colors["categories"]) <= set(explorer.source.cfg.colors) and colors["labels"] != out["labels"]


def test_report_files_are_served_from_the_report_folder_only(explore_server, explore_study):
    url, explorer = explore_server
    assert call(url, "GET", "/api/report")[1]["message"] == "no report yet: run ablate report explore"
    folder = explorer.report_dir
    try:
        (folder / "figures").mkdir(parents=True)
        (folder / "table.md").write_text("| family | loss |\n|---|---|\n| random | 5.3 |\n")
        Image.new("RGB", (4, 4), "red").save(folder / "figures" / "loss.png")
        (folder / "escape.png").symlink_to(explore_study)  # a link out of the folder is not followed out
        status, report = call(url, "GET", "/api/report")
        assert status == 200 and report["table"].startswith("| family | loss |")
        assert report["files"] == ["figures/loss.png", "table.md"]  # not the link
        status, data = call(url, "GET", "/report/figures/loss.png")
        assert status == 200 and data.startswith(b"\x89PNG")
        for path in ("/report/../../../etc/passwd", "/report/%2e%2e/%2e%2e/etc/passwd", "/report//etc/passwd",
                     "/report/escape.png", f"/report/{'../' * 12}{explore_study}", "/static/../../cli.py",
                     "/report/", "/report/figures"):
            status, out = call(url, "GET", path)
            assert status == 404, (path, out)
        assert "not a file of the report folder" in call(url, "GET", "/report/escape.png")[1]["error"]
    finally:
        shutil.rmtree(folder)

