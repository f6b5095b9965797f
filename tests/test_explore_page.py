"""The explorer page in headless Chromium (Debian's package, driven by Playwright) over a real tiny study:
every interaction changes what the page shows, and what it shows is what the API answered."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page, sync_playwright

STRATEGIES = ["random", "block", "hard", "dirichlet_4m"]  # the study's maskings: three families and a preset
CHROMIUM = "/usr/bin/chromium"  # scripts/debian-packages.sh chromium installs it
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, explore_server) -> Page:
    url, _ = explore_server
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    errors = []
    page.on("pageerror", lambda error: errors.append(error))
    page.goto(url)
    settled(page, renders=1, features=1)
    yield page
    page.close()
    assert not errors, errors


def counter(page: Page, name: str) -> int:
    return page.evaluate(f"Number(document.body.dataset.{name} || 0)")


def settled(page: Page, renders: int | None = None, features: int | None = None) -> None:
    """Wait until the page has drawn ``renders`` predictions and ``features`` feature plots in all."""
    if renders is not None:
        page.wait_for_function(f"Number(document.body.dataset.renders || 0) >= {renders}", timeout=60_000)
    if features is not None:
        page.wait_for_function(f"Number(document.body.dataset.featureUpdates || 0) >= {features}", timeout=60_000)


def after(page: Page, action, predictions: bool = True, features: bool = False) -> None:
    """Do ``action`` and wait for the redraws it causes (of the predictions, of the feature plots)."""
    renders, plots = counter(page, "renders"), counter(page, "featureUpdates")
    action()
    settled(page, renders + 1 if predictions else None, plots + 1 if features else None)


def set_value(page: Page, selector: str, value: str) -> None:
    page.fill(selector, value)
    page.dispatch_event(selector, "change")


def columns(page: Page) -> list[str]:
    return page.eval_on_selector_all("#columns .column", "cs => cs.map(c => c.dataset.strategy)")


def image_sources(page: Page, selector: str) -> list[str]:
    return page.eval_on_selector_all(selector, "imgs => imgs.map(i => i.src)")


def canvas_pixels(page: Page, selector: str) -> str:
    return page.eval_on_selector(selector, "c => c.toDataURL()")


def test_the_page_shows_one_column_per_family_with_predictions(page):
    assert columns(page) == STRATEGIES
    assert page.inner_text("#study") == "study explore"
    assert "best run per masking by train/loss (minimize)" in page.inner_text("#objective")
    assert page.inner_text("#scene-label") == "held-out scene 0"
    assert page.inner_text("#status").startswith("4 strategies in")
    predictions = image_sources(page, ".column[data-strategy=block] .predictions img")
    assert len(predictions) == 2 and all(s.startswith("data:image/png;base64,") for s in predictions)  # semseg, depth
    assert page.locator(".column[data-strategy=block] .predictions .words span").count() > 1  # the caption
    assert page.locator("#features canvas").count() == 4


def test_choosing_a_scene_changes_the_inputs_and_the_predictions(page):
    given = image_sources(page, "#scene img")
    attended = image_sources(page, ".column[data-strategy=random] .encoder-attention img")
    attention = canvas_pixels(page, ".column[data-strategy=random] .encoder-attention canvas")
    after(page, lambda: set_value(page, "#index", "5"), features=True)
    assert page.inner_text("#scene-label") == "held-out scene 5"
    assert image_sources(page, "#scene img") != given
    # (A model trained for 6 steps predicts the same tokens for every scene; what it attends to differs.)
    assert image_sources(page, ".column[data-strategy=random] .encoder-attention img") != attended
    assert canvas_pixels(page, ".column[data-strategy=random] .encoder-attention canvas") != attention

    after(page, lambda: page.check("input[name=source][value=seed]"), features=True)
    assert page.inner_text("#scene-label") == "new scene from seed 0"
    after(page, lambda: page.check("input[name=source][value=caption]"), features=True)
    assert page.inner_text("#scene-label") == "typed caption"
    assert page.inner_text("#scene .words").split() == "large red circle and small blue square [EOS]".split()
    assert "this scene has not every modality" in page.inner_text("#columns")


def test_toggling_a_strategy_removes_and_restores_its_column(page):
    after(page, lambda: page.uncheck("#strategy-list input[value=block]"), features=True)
    assert columns(page) == ["random", "hard", "dirichlet_4m"] and page.locator("#features canvas").count() == 3
    assert page.inner_text("#status").startswith("3 strategies in")
    after(page, lambda: page.check("#strategy-list input[value=block]"), features=True)
    assert columns(page) == STRATEGIES


def test_painting_a_region_hides_it_and_shows_the_in_painting(page):
    scene_overlay = canvas_pixels(page, "#scene canvas")
    box = page.locator("#paint").bounding_box()
    cell = box["width"] / 8

    def drag():
        page.mouse.move(box["x"] + 1.5 * cell, box["y"] + 1.5 * cell)
        page.mouse.down()
        page.mouse.move(box["x"] + 3.5 * cell, box["y"] + 3.5 * cell, steps=8)
        page.mouse.up()

    after(page, drag)
    assert "cells hidden from the given images" in page.inner_text("#paint-note")
    assert canvas_pixels(page, "#scene canvas") != scene_overlay  # the hidden cells are dark now
    captions = page.locator(".column[data-strategy=hard] .predictions figcaption").all_inner_texts()
    assert captions[0].startswith("rgb (in-painted)")
    after(page, lambda: page.click("#clear-hidden"))
    assert not any(c.startswith("rgb") for c in page.locator(".column .predictions figcaption").all_inner_texts())


def test_choosing_a_target_token_moves_the_cross_attention(page):
    cross = ".column[data-strategy=random] .cross-attention"
    assert page.get_attribute(cross, "data-target") == "semseg #36"  # the center cell by default
    before = canvas_pixels(page, f"{cross} canvas")
    semseg = page.locator(".column[data-strategy=random] .predictions canvas").first
    after(page, lambda: semseg.click(position={"x": 4, "y": 4}))
    assert page.get_attribute(cross, "data-target") == "semseg #0"
    assert "cross-attention from semseg #0" in page.inner_text("#target-note")
    assert canvas_pixels(page, f"{cross} canvas") != before

    word = page.locator(".column[data-strategy=random] .predictions .words span").nth(2)
    after(page, word.click)
    assert page.get_attribute(cross, "data-target") == "caption #2"

    encoder = page.locator(".column[data-strategy=random] .encoder-attention canvas").first
    mean = canvas_pixels(page, ".column[data-strategy=random] .encoder-attention canvas")
    after(page, lambda: encoder.click(position={"x": 70, "y": 70}))
    assert page.inner_text("#query-note") == "self-attention from rgb #36"
    assert canvas_pixels(page, ".column[data-strategy=random] .encoder-attention canvas") != mean


def test_layer_feature_coloring_and_the_report_link(page, tmp_path):
    after(page, lambda: page.select_option("#layer", "0"))
    assert "encoder self-attention, layer 0" in page.inner_text(".column[data-strategy=hard]")
    legend = page.inner_text("#feature-legend")
    after(page, lambda: page.select_option("#attribute", "leftmost shape"), predictions=False, features=True)
    assert page.inner_text("#feature-legend").startswith("leftmost shape:") and legend.startswith("objects:")

    page.click("#report-toggle")
    page.wait_for_selector("#report-message")
    assert page.inner_text("#report-message") == "no report yet: run ablate report explore"

    shot = tmp_path / "explorer.png"
    page.screenshot(path=shot, full_page=True)
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 50_000
    print(f"screenshot: {shot}")


def test_a_bad_caption_shows_the_servers_message(page):
    page.check("input[name=source][value=caption]")
    set_value(page, "#caption", "a purple cow")
    page.wait_for_function("document.querySelector('#status').classList.contains('error')", timeout=60_000)
    assert "unknown words ['a', 'cow']" in page.inner_text("#status")


def test_the_report_button_shows_the_table_and_the_figures(page, explore_server):
    _, explorer = explore_server
    folder = explorer.report_dir
    try:
        folder.mkdir(parents=True)
        note = "Mean ± sd over seeds; " + "a long sentence of the report's note that must wrap inside the panel " * 8
        table = "| masking | loss |\n|:---|---:|\n| random | **5.3** |\n| block | 6.1 |\n"
        (folder / "table.md").write_text(f"{table}\n{note}\n")
        Image.new("RGB", (40, 30), "blue").save(folder / "metrics.png")
        page.click("#report-toggle")
        page.wait_for_selector("#report-table")
        # The Markdown is rendered: a table with its header, bold as bold, no pipes left, nothing past the panel.
        assert page.locator("#report-table th").all_inner_texts() == ["masking", "loss"]
        assert page.locator("#report-table td").all_inner_texts() == ["random", "5.3", "block", "6.1"]
        assert page.inner_text("#report-table strong") == "5.3" and "|" not in page.inner_text("#report-table")
        assert page.inner_text("#report-table p").startswith("Mean ± sd over seeds")
        panel = page.locator("#report").bounding_box()
        assert panel["x"] + panel["width"] <= 1500 and page.evaluate(
            "document.querySelector('#report p').scrollWidth <= document.querySelector('#report').clientWidth")
        figure = page.locator("#report img")
        figure.wait_for()
        assert figure.get_attribute("src") == "/report/metrics.png"
        page.wait_for_function("document.querySelector('#report img').naturalWidth === 40")
        assert page.locator("#report a").all_inner_texts() == ["metrics.png", "table.md"]
    finally:
        shutil.rmtree(folder)


def answered(page: Page, action, features: bool = False) -> dict:
    """Do ``action``, wait for the redraw, and return what /api/predict answered for it."""
    renders, plots = counter(page, "renders"), counter(page, "featureUpdates")
    with page.expect_response(lambda r: r.url.endswith("/api/predict"), timeout=60_000) as response:
        action()
    settled(page, renders + 1, plots + 1 if features else None)
    return response.value.json()


def given_boxes(page: Page, role: str = "given") -> list[str]:
    return page.eval_on_selector_all(f"#modalities input[data-role={role}]:checked",
                                     "boxes => boxes.map(b => b.dataset.modality)")


def write_image(path, height: int = 60, width: int = 100, fmt: str = "PNG"):
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = (220, 30, 30)
    pixels[height // 3 :, width // 2 :] = (30, 30, 220)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def test_the_preset_is_shown_and_asked_for_by_its_name(page):
    assert page.inner_text(".column[data-strategy=dirichlet_4m] h3") == "dirichlet_4m"
    assert "dirichlet_4m" in page.inner_text("#strategy-list")
    for other in ("random", "block", "hard"):
        after(page, lambda other=other: page.uncheck(f"#strategy-list input[value={other}]"), features=True)
    out = answered(page, lambda: set_value(page, "#index", "1"), features=True)
    assert list(out["strategies"]) == ["dirichlet_4m"] and columns(page) == ["dirichlet_4m"]
    assert page.locator("#features canvas[data-strategy=dirichlet_4m]").count() == 1


def test_an_uploaded_png_is_answered_by_every_strategy(page, tmp_path):
    out = answered(page, lambda: page.set_input_files("#upload", write_image(tmp_path / "mine.png")), features=True)
    assert out["scene"]["label"] == "uploaded mine.png (100x60 px)" == page.inner_text("#scene-label")
    assert page.is_checked("input[name=source][value=upload]")
    assert columns(page) == STRATEGIES == list(out["strategies"])
    for name in STRATEGIES:
        assert len(image_sources(page, f".column[data-strategy={name}] .predictions img")) == 2  # semseg, depth
    assert image_sources(page, "#scene img")[0] == out["scene"]["upload"]["png"]  # the upload as it was resized
    assert page.locator(".score").count() == 0  # no ground truth to score against
    # It stays the input while other controls change: painting hides cells of it.
    assert page.inner_text("#paint-note") == "drag over the image to hide cells from the encoder"
    out = answered(page, lambda: page.select_option("#layer", "0"))
    assert out["scene"]["label"] == "uploaded mine.png (100x60 px)"


def test_a_bad_upload_is_refused_and_changes_nothing_else(page, tmp_path):
    snapshot = "['#scene', '#columns', '#features', '#controls'].map(s => document.querySelector(s).innerHTML)"
    before, renders = page.evaluate(snapshot), counter(page, "renders")
    page.set_input_files("#upload", write_image(tmp_path / "moving.gif", fmt="GIF"))
    page.wait_for_function("document.querySelector('#status').classList.contains('error')", timeout=60_000)
    status = page.inner_text("#status")
    assert status.startswith("upload: Content-Type image/gif is not allowed; send a PNG or JPEG")
    assert page.evaluate(snapshot) == before and counter(page, "renders") == renders
    assert not page.is_enabled("input[name=source][value=upload]")

    # A JPEG is taken, and the file type does not decide alone: a PNG named .jpg is refused by its bytes.
    out = answered(page, lambda: page.set_input_files("#upload", write_image(tmp_path / "photo.jpg", fmt="JPEG")),
                   features=True)
    assert out["scene"]["label"] == "uploaded photo.jpg (100x60 px)"
    before = page.evaluate(snapshot)
    page.set_input_files("#upload", write_image(tmp_path / "fake.jpg"))
    page.wait_for_function("document.querySelector('#status').textContent.startsWith('upload:')", timeout=60_000)
    assert "the bytes are a PNG image, sent as image/jpeg" in page.inner_text("#status")
    assert page.evaluate(snapshot) == before


def test_a_typed_caption_goes_with_the_image(page, tmp_path):
    out = answered(page, lambda: page.check("#typed-caption"), features=True)
    assert given_boxes(page) == ["rgb", "caption"] and "caption" not in given_boxes(page, "targets")
    assert out["scene"]["label"] == "held-out scene 0 + typed caption" == page.inner_text("#scene-label")
    assert page.inner_text("#scene .words").split() == "large red circle and small blue square [EOS]".split()
    for name in STRATEGIES:  # the caption's words are encoder inputs beside the image's cells
        assert page.locator(f".column[data-strategy={name}] .encoder-attention .words span").count() == 8
        assert out["strategies"][name]["attention"]["keys"]["modality"].count("caption") == 8
    out = answered(page, lambda: page.set_input_files("#upload", write_image(tmp_path / "mine.png")), features=True)
    assert out["scene"]["label"] == "uploaded mine.png (100x60 px) + typed caption"
    out = answered(page, lambda: page.uncheck("#typed-caption"), features=True)
    assert given_boxes(page) == ["rgb"] and out["scene"]["label"] == "uploaded mine.png (100x60 px)"


def test_times_and_scores_on_the_page_are_the_apis(page):
    out = answered(page, lambda: set_value(page, "#index", "7"), features=True)
    for name, column in out["strategies"].items():
        timing = page.locator(f".column[data-strategy={name}] .timing")
        assert float(timing.get_attribute("data-seconds")) == column["seconds"] > 0
        assert timing.inner_text() == f"answered in {column['seconds']:.3f} s"
        shown = dict(page.eval_on_selector_all(f".column[data-strategy={name}] .score",
                                               "ss => ss.map(s => [s.dataset.key, s.textContent])"))
        expected = {s["key"]: f"{s['label']} {s['value']:.3f} {'↑' if s['better'] == 'higher' else '↓'}"
                    for scores in column["scores"].values() for s in scores}
        assert shown == expected and set(expected) == {"rgb_to_semseg/miou", "rgb_to_depth/delta1",
                                                       "rgb_to_depth/abs_rel", "rgb_to_caption/attr_acc"}


def paint_block(page: Page) -> None:
    """A stroke over the diagonal cells (2, 2) to (4, 4): it hides 27, the middle one, among others."""
    box = page.locator("#paint").bounding_box()
    cell = box["width"] / 8
    page.mouse.move(box["x"] + 2.5 * cell, box["y"] + 2.5 * cell)
    page.mouse.down()
    page.mouse.move(box["x"] + 4.5 * cell, box["y"] + 4.5 * cell, steps=8)
    page.mouse.up()


def test_hiding_cells_shows_a_before_and_after(page):
    assert page.locator(".changes").count() == 0
    out = answered(page, lambda: paint_block(page))
    assert 27 in out["scene"]["hidden"]["rgb"]
    for name, column in out["strategies"].items():
        for m, change in column["changes"].items():
            tile = page.locator(f".column[data-strategy={name}] .changes .change[data-modality={m}]")
            assert int(tile.get_attribute("data-changed")) == len(change["changed"])
            assert int(tile.get_attribute("data-of")) == change["of"]
            assert f"{len(change['changed'])} of {change['of']}" in tile.inner_text()
        semseg = f".column[data-strategy={name}] .changes .change[data-modality=semseg] img"
        assert page.get_attribute(semseg, "src") == column["changes"]["semseg"]["before"]["png"]
    after(page, lambda: page.click("#clear-hidden"))
    assert page.locator(".changes").count() == 0


def test_a_hidden_cell_clicked_says_the_mean_is_shown(page):
    after(page, lambda: paint_block(page))
    encoder = ".column[data-strategy=random] .encoder-attention canvas"
    mean = canvas_pixels(page, encoder)
    renders = counter(page, "renders")
    page.locator(encoder).first.click(position={"x": 3.5 * 16, "y": 3.5 * 16})  # cell 27, hidden
    settled(page, renders + 1)
    assert page.inner_text("#query-note") == ("self-attention received, mean over queries (rgb #27 is hidden: not an "
                                              "encoder input, nothing attends from it)")
    assert "rgb #27 is hidden" in page.inner_text(".column[data-strategy=random]")
    assert canvas_pixels(page, encoder) == mean
    page.locator(encoder).first.click(position={"x": 0.5 * 16, "y": 0.5 * 16})  # cell 0, seen
    settled(page, renders + 2)
    assert page.inner_text("#query-note") == "self-attention from rgb #0" and canvas_pixels(page, encoder) != mean


def test_caption_mode_predicts_rgb_and_switching_back_gives_rgb_again(page):
    out = answered(page, lambda: page.check("input[name=source][value=caption]"), features=True)
    assert given_boxes(page) == ["caption"] and out["targets"][0] == "rgb"
    assert "rgb" in given_boxes(page, "targets")
    captions = page.locator(".column[data-strategy=random] .predictions figcaption").all_inner_texts()
    assert captions[0].startswith("rgb (predicted)")
    assert page.inner_text("#paint-note") == "give an image modality to hide cells of it"
    out = answered(page, lambda: page.check("input[name=source][value=heldout]"), features=True)
    assert given_boxes(page) == ["rgb"] and out["scene"]["given"] == ["rgb"]
    assert out["targets"] == ["semseg", "depth", "caption"]
    out = answered(page, lambda: paint_block(page))  # painting works again
    assert 27 in out["scene"]["hidden"]["rgb"] and "cells hidden" in page.inner_text("#paint-note")


def test_a_refused_question_clears_the_last_answer_and_keeps_the_page_still(page):
    page.check("input[name=source][value=caption]")
    settled(page, counter(page, "renders") + 1)
    header, layout = page.locator("header").bounding_box(), page.locator("#layout").bounding_box()
    refusals = counter(page, "refusals")
    set_value(page, "#caption", "a purple cow " * 20)
    page.wait_for_function(f"Number(document.body.dataset.refusals || 0) > {refusals}", timeout=60_000)
    message = page.get_attribute("#status", "title")
    assert message.startswith("scene.caption: unknown words ['a', 'cow']; the caption vocabulary is")
    assert page.inner_text("#status") == message  # the text is whole; the line shows what fits
    assert page.evaluate("(s => s.scrollWidth > s.clientWidth)(document.querySelector('#status'))")
    assert page.locator("header").bounding_box() == header  # one line, the same height: nothing below moved
    assert page.locator("#layout").bounding_box()["y"] == layout["y"]
    # Nothing of the last answer is left under the new input.
    assert columns(page) == [] and page.locator("#scene img, #features canvas").count() == 0
    assert page.inner_text("#scene-label") == "no answer" and message in page.inner_text("#scene")
    after(page, lambda: set_value(page, "#caption", "small red square"))
    assert columns(page) == STRATEGIES and page.inner_text("#scene-label") == "typed caption"
    assert not page.evaluate("document.querySelector('#status').classList.contains('error')")
