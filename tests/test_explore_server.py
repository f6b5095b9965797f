"""``ablate explore``'s server over a real tiny study: the best run per masking, what a prediction holds (scores,
times, changes from hiding), uploads and combined queries, the shared feature frame, bad requests answered with
4xx and a message, nothing served from outside the report folder, localhost, Ctrl-C."""

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
import torch
from PIL import Image
from study_files import write_study

from ablate.cli import parser
from ablate.explorer.checkpoints import best_runs, objective
from ablate.explorer.explorer import ExploreError, Explorer
from ablate.explorer.features import align
from ablate.explorer.predict import GENERATION_SEED
from ablate.explorer.uploads import MAX_BYTES, UploadError, read_image
from ablate.ledger import Ledger
from ablate.schema import StudyError
from ablate.study_file import load_study
from model.evaluate import decode_tokens
from model.generate import generate
from model.run_folder import RunFolder
from model.scenes import render
from model.tasks import TASKS, Truth

FAMILIES = ["random", "block", "hard", "dirichlet_4m"]  # the study's masking choices: three families, a preset
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


def raw_post(url: str, path: str, headers: dict, body: bytes = b"") -> tuple[int, bytes]:
    """A POST with exactly these headers (no Content-Length unless given) and body."""
    where = urlsplit(url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    conn.putrequest("POST", path)
    for key, value in headers.items():
        conn.putheader(key, value)
    conn.endheaders()
    if body:
        conn.send(body)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def image_bytes(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def upload(url: str, data: bytes, content_type: str = "image/png", name: str = "mine.png"):
    return call(url, "POST", f"/api/upload?name={name}", data, {"Content-Type": content_type})


def two_colors(height: int = 60, width: int = 100) -> np.ndarray:
    """Red left of the middle, blue right of it: uint8 [H, W, 3]."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = (220, 30, 30)
    pixels[:, width // 2 :] = (30, 30, 220)
    return pixels


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
        assert column["masking"] == name and column["family"] == {"dirichlet_4m": "dirichlet"}.get(name, name)
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
    # The same question gets the same answer (in its own time).
    again = call(url, "POST", "/api/predict", BASE)[1]["strategies"]
    assert [{**c, "seconds": 0} for c in again.values()] == [{**c, "seconds": 0} for c in out["strategies"].values()]


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
    ({**BASE, "strategies": ["nope"]}, 422,
     "strategies: unknown ['nope']; this study has ['random', 'block', 'hard', 'dirichlet_4m']"),
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
    status, data = raw_post(url, "/api/predict", {"Transfer-Encoding": "chunked"}, b"2\r\n{}\r\n0\r\n\r\n")
    assert status == 411 and b"Content-Length" in data
    assert call(url, "GET", "/api/nothing")[0] == 404
    assert call(url, "POST", "/api/features", {"strategies": FAMILIES, "attribute": "mood"})[0] == 422


def test_features_lay_held_out_scenes_out_in_one_frame(explore_server):
    url, explorer = explore_server
    status, out = call(url, "POST", "/api/features", {"strategies": ["hard", "random"], "attribute": "objects"})
    assert status == 200, out
    assert out["categories"] == [str(n) for n in sorted(set(explorer.feature_scenes.present.sum(1)))]
    assert len(out["labels"]) == 300
    assert out["reference"] == "random" and "orthogonal Procrustes" in out["frame"]  # the study's first masking
    for column in out["strategies"].values():
        assert len(column["points"]) == 300 and len(column["scene"]) == 2 and 0 <= column["agreement"] <= 1
    assert out["strategies"]["random"]["agreement"] == 1
    assert out["strategies"]["random"]["points"] != out["strategies"]["hard"]["points"]
    points = np.array(out["strategies"]["hard"]["points"])
    assert np.allclose((points**2).sum(1).mean(), 1, atol=0.01)  # one scale for every model: unit mean square radius
    # The frame is the study's, not the request's: another choice of columns moves no point.
    alone = call(url, "POST", "/api/features", {"strategies": ["hard"], "attribute": "objects"})[1]
    assert alone["strategies"]["hard"] == out["strategies"]["hard"]
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



def test_the_preset_is_named_as_the_study_names_it(explore_server):
    url, _ = explore_server
    info = call(url, "GET", "/api/info")[1]
    assert [(s["masking"], s["family"]) for s in info["strategies"]][-1] == ("dirichlet_4m", "dirichlet")
    status, out = call(url, "POST", "/api/predict", {**BASE, "strategies": ["dirichlet_4m"]})
    assert status == 200 and list(out["strategies"]) == ["dirichlet_4m"], out
    assert out["strategies"]["dirichlet_4m"]["masking"] == "dirichlet_4m"
    assert call(url, "POST", "/api/features", {"strategies": ["dirichlet_4m"]})[0] == 200


def test_times_and_scores_are_each_strategys_own(explore_server):
    """Each column has its own time, and each prediction its scores against the scene's ground truth by the
    evaluation's own task scorers: recomputed here from the same generation, they are equal."""
    url, explorer = explore_server
    body = {**BASE, "targets": ["semseg", "depth", "caption"], "scene": {"index": 4}}
    status, out = call(url, "POST", "/api/predict", body)
    assert status == 200, out
    columns = out["strategies"]
    assert all(c["seconds"] > 0 for c in columns.values()) and sum(c["seconds"] for c in columns.values()) <= out[
        "seconds"] + 0.01
    assert out["scene"]["scored"] is True
    truth = Truth(explorer.source.cfg, render(explorer.source.cfg, explorer.source.data_seed, "val", np.array([4])))
    for name, column in columns.items():
        keys = {m: [s["key"] for s in scores] for m, scores in column["scores"].items()}
        assert keys == {"semseg": ["rgb_to_semseg/miou"], "depth": ["rgb_to_depth/delta1", "rgb_to_depth/abs_rel"],
                        "caption": ["rgb_to_caption/attr_acc"]}
        strategy = explorer.strategies[name]
        rgb = explorer.source.val["rgb"][4:5].long()
        generated = generate(strategy.model, strategy.specs, {"rgb": rgb}, body["targets"],
                             torch.Generator().manual_seed(GENERATION_SEED), 8)
        for m, scores in column["scores"].items():
            task = next(t for t in TASKS.values() if t.target == m)
            native = decode_tokens(explorer.source.tokenizers[m], strategy.specs[m], generated.tokens[m])
            expected = task.score(native, truth)
            assert {s["key"].split("/")[1]: s["value"] for s in scores} == {k: round(v, 3) for k, v in expected.items()}


def test_an_uploaded_image_is_resized_tokenized_and_answered_by_every_strategy(explore_server):
    url, explorer = explore_server
    status, up = upload(url, image_bytes(two_colors()))
    assert status == 200, up
    assert up["label"] == "uploaded mine.png (100x60 px)" and up["size"] == [100, 60] and up["canvas"] == 32
    assert upload(url, image_bytes(two_colors()))[1]["upload"] == up["upload"]  # the same bytes, the same id
    scene = explorer.uploads.get(up["upload"])
    assert (scene.upload[:, :15] == (220, 30, 30)).all() and (scene.upload[:, 17:] == (30, 30, 220)).all()
    expected = explorer.source.tokenizers["rgb"].encode(scene.upload[None]).reshape(1, -1)
    assert (scene.tokens["rgb"].numpy() == expected).all()  # the study's fitted rgb tokenizer

    body = {**BASE, "scene": {"source": "upload", "upload": up["upload"]}}
    status, out = call(url, "POST", "/api/predict", body)
    assert status == 200, out
    assert out["scene"]["label"] == up["label"] and out["scene"]["truth"] == {} and out["scene"]["scored"] is False
    assert png_pixels(out["scene"]["upload"]["png"]).shape == (32, 32, 3)
    assert list(out["strategies"]) == FAMILIES
    for column in out["strategies"].values():
        assert png_pixels(column["predictions"]["semseg"]["png"]).shape == (32, 32, 3)
        assert column["predictions"]["caption"]["words"] and column["scores"] == {}
        assert column["training_masks"] is None
    features = call(url, "POST", "/api/features", {"scene": body["scene"], "strategies": ["random"]})[1]
    assert len(features["strategies"]["random"]["scene"]) == 2

    status, jpeg = upload(url, image_bytes(two_colors(40, 40), "JPEG"), "image/jpeg", "photo.jpg")
    assert status == 200 and jpeg["label"] == "uploaded photo.jpg (40x40 px)", jpeg
    status, out = call(url, "POST", "/api/predict", {**body, "scene": {"source": "upload", "upload": "0" * 16}})
    assert status == 422 and "no such upload" in out["error"]


def _truncated_png() -> bytes:
    data = image_bytes(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    return data[: len(data) // 2]


@pytest.mark.parametrize("data, content_type, status, message", [
    (image_bytes(two_colors(), "GIF"), "image/gif", 415, "Content-Type image/gif is not allowed; send a PNG or JPEG"),
    (b"hello", "text/plain", 415, "Content-Type text/plain is not allowed"),
    (image_bytes(two_colors()), "image/jpeg", 415, "the bytes are a PNG image, sent as image/jpeg"),
    (b"not an image at all", "image/png", 415, "not a readable image"),
    (_truncated_png(), "image/png", 422, "the PNG cannot be decoded"),
    (image_bytes(np.zeros((10, 5000, 3), np.uint8)), "image/png", 422, "upload: 5000x10 px; send a PNG or JPEG"),
    (image_bytes(np.zeros((4, 4, 3), np.uint8)), "image/png", 422, "at least 8x8 px"),
])
def test_a_bad_upload_is_refused_with_what_is_allowed(explore_server, data, content_type, status, message):
    url, explorer = explore_server
    kept = len(explorer.uploads)
    got, out = upload(url, data, content_type)
    assert got == status and message in out["error"], out
    assert "at most 5 MB and 4096x4096 px" in out["error"]
    assert len(explorer.uploads) == kept  # nothing kept


def test_an_oversize_upload_is_refused_unread(explore_server):
    url, _ = explore_server
    status, data = raw_post(url, "/api/upload", {"Content-Type": "image/png", "Content-Length": str(MAX_BYTES + 1)})
    assert status == 413 and f"at most {MAX_BYTES}".encode() in data  # answered from the headers, the body unsent
    with pytest.raises(UploadError, match=r"upload: 5242881 bytes; send a PNG or JPEG") as refused:
        read_image(b"x" * (MAX_BYTES + 1), "image/png", 32, 8)
    assert refused.value.status == 413


def test_a_typed_caption_with_an_image_is_a_combined_query(explore_server):
    url, _ = explore_server
    typed = "small red square"
    body = {**BASE, "given": ["rgb", "caption"], "targets": ["semseg"],
            "scene": {"index": 3, "caption": typed, "typed_caption": True}}
    status, out = call(url, "POST", "/api/predict", body)
    assert status == 200, out
    assert out["scene"]["label"] == "held-out scene 3 + typed caption"
    assert out["scene"]["decoded"]["caption"]["words"] == typed.split() and "caption" not in out["scene"]["truth"]
    for column in out["strategies"].values():
        keys = column["attention"]["keys"]
        assert keys["modality"].count("rgb") == 64 and keys["modality"].count("caption") == 4  # 3 words + EOS
        assert [s["key"] for s in column["scores"]["semseg"]] == ["rgb_to_semseg/miou"]  # the image's truth
    alone = call(url, "POST", "/api/predict", {**body, "given": ["rgb"]})[1]
    assert all(c["attention"]["keys"]["modality"] == ["rgb"] * 64 for c in alone["strategies"].values())

    up = upload(url, image_bytes(two_colors()))[1]["upload"]
    status, out = call(url, "POST", "/api/predict", {**body, "scene": {"source": "upload", "upload": up,
                                                                        "caption": typed, "typed_caption": True}})
    assert status == 200 and out["scene"]["label"] == "uploaded mine.png (100x60 px) + typed caption", out
    status, out = call(url, "POST", "/api/predict", {**body, "scene": {"source": "upload", "upload": up}})
    assert status == 422 and "has no ['caption']" in out["error"] and "scene.typed_caption" in out["error"], out
    status, out = call(url, "POST", "/api/predict", {**body, "scene": {"source": "caption", "caption": typed,
                                                                        "typed_caption": True}})
    assert status == 422 and "scene.typed_caption: goes with an image source" in out["error"]


def test_hiding_cells_shows_what_changed_against_the_answer_without_them(explore_server):
    url, _ = explore_server
    hidden = [18, 19, 20, 26, 27, 28, 34, 35, 36]
    body = {**BASE, "targets": ["semseg", "caption"], "scene": {"index": 2}}
    plain = call(url, "POST", "/api/predict", body)[1]
    assert all(c["changes"] is None for c in plain["strategies"].values())
    status, out = call(url, "POST", "/api/predict", {**body, "hidden": hidden})
    assert status == 200, out
    for name, column in out["strategies"].items():
        changes = column["changes"]
        assert set(changes) == {"rgb", "semseg", "caption"}
        assert changes["rgb"]["against"] == "given" and changes["rgb"]["of"] == len(hidden)
        assert set(changes["rgb"]["changed"]) <= set(hidden)
        before = plain["strategies"][name]["predictions"]
        semseg = changes["semseg"]
        assert semseg["against"] == "unhidden" and semseg["of"] == 64 and set(semseg["changed"]) <= set(range(64))
        assert semseg["before"]["png"] == before["semseg"]["png"]  # what the page answered before the hiding
        assert semseg["changed"] or column["predictions"]["semseg"]["png"] == before["semseg"]["png"]
        caption = changes["caption"]
        assert caption["before"]["words"] == before["caption"]["words"]
        assert caption["of"] == max(len(caption["before"]["words"]), len(column["predictions"]["caption"]["words"])) + 1
        same = caption["before"]["words"] == column["predictions"]["caption"]["words"]
        assert (caption["changed"] == []) == same


def test_the_answer_without_hidden_cells_is_generated_once_and_kept(explore_server, monkeypatch):
    """The page asks the question without hidden cells just before the user paints: the before / after reuses
    that answer instead of generating it again (one generation fewer per strategy), and a question never asked
    without hiding generates it."""
    from ablate.explorer import predict

    url, _ = explore_server
    calls = []
    generate = predict._generate
    monkeypatch.setattr(predict, "_generate", lambda *a, **k: calls.append(a[3]) or generate(*a, **k))
    hidden = [9, 10, 17, 18]
    body = {**BASE, "strategies": ["block", "random"], "targets": ["semseg", "caption"], "scene": {"index": 5}}

    def asked(request: dict) -> list[list[str]]:
        calls.clear()
        status, out = call(url, "POST", "/api/predict", request)
        assert status == 200, out
        return [c for c in calls if c]  # generations of something (painting nothing is no generation)

    assert asked(body) == [["semseg", "caption"]] * 2
    painted = asked({**body, "hidden": hidden})
    assert painted == [["rgb"], ["semseg", "caption"]] * 2  # in-painting, then the rest from it; no third
    unasked = asked({**body, "scene": {"index": 6}, "hidden": hidden})
    assert unasked == [["rgb"], ["semseg", "caption"], ["semseg", "caption"]] * 2


def test_the_shared_frame_undoes_a_rotation_and_a_scale():
    """Features that are another model's up to an orthogonal map, a scale and a shift land where the reference's do
    (agreement 1); features unrelated to the reference's do not."""
    generator = np.random.default_rng(0)
    reference = generator.normal(size=(200, 16)) * np.linspace(3, 0.1, 16)
    rotation, _ = np.linalg.qr(generator.normal(size=(16, 16)))
    same = reference @ rotation * 4 + 2
    unrelated = generator.normal(size=(200, 12)) * np.linspace(3, 0.1, 12)
    features = {n: torch.from_numpy(f) for n, f in {"a": reference, "b": same, "c": unrelated}.items()}
    frame = align(features, "a")
    assert frame["a"].agreement == pytest.approx(1) and frame["b"].agreement == pytest.approx(1)
    assert torch.allclose(frame["b"](features["b"]), frame["a"](features["a"]), atol=1e-6)
    assert frame["c"].agreement < 0.5


def test_ctrl_c_stops_the_explorer_with_one_line_and_status_0(explore_study, tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-c", "import sys; from ablate.cli import main; sys.exit(main())", "explore",
               str(explore_study), "--port", str(port), "--reports", str(tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            try:
                if call(f"http://127.0.0.1:{port}", "GET", "/api/info")[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        os.kill(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, (out, err)
    assert out.splitlines() == [f"explorer for explore on http://127.0.0.1:{port} (Ctrl-C to stop)",
                                "explorer stopped"]
    assert "Traceback" not in err and "CancelledError" not in err and "KeyboardInterrupt" not in err, err
