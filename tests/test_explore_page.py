"""The explorer page in headless Chromium (Debian's package, driven by Playwright) over a real tiny study:
every interaction changes what the page shows."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image
from playwright.sync_api import Page, sync_playwright

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
    assert columns(page) == ["random", "block", "hard"]
    assert page.inner_text("#study") == "study explore"
    assert "best run per masking by train/loss (minimize)" in page.inner_text("#objective")
    assert page.inner_text("#scene-label") == "held-out scene 0"
    assert page.inner_text("#status").startswith("3 strategies in")
    predictions = image_sources(page, ".column[data-strategy=block] .predictions img")
    assert len(predictions) == 2 and all(s.startswith("data:image/png;base64,") for s in predictions)  # semseg, depth
    assert page.locator(".column[data-strategy=block] .predictions .words span").count() > 1  # the caption
    assert page.locator("#features canvas").count() == 3


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
    assert "a typed caption has no other modalities to mask" in page.inner_text("#columns")


def test_toggling_a_strategy_removes_and_restores_its_column(page):
    after(page, lambda: page.uncheck("#strategy-list input[value=block]"), features=True)
    assert columns(page) == ["random", "hard"] and page.locator("#features canvas").count() == 2
    assert page.inner_text("#status").startswith("2 strategies in")
    after(page, lambda: page.check("#strategy-list input[value=block]"), features=True)
    assert columns(page) == ["random", "block", "hard"]


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
        (folder / "table.md").write_text("| masking | loss |\n|---|---|\n| random | 5.3 |\n")
        Image.new("RGB", (40, 30), "blue").save(folder / "metrics.png")
        page.click("#report-toggle")
        page.wait_for_selector("#report-table")
        assert "| random | 5.3 |" in page.inner_text("#report-table")
        figure = page.locator("#report img")
        figure.wait_for()
        assert figure.get_attribute("src") == "/report/metrics.png"
        page.wait_for_function("document.querySelector('#report img').naturalWidth === 40")
        assert page.locator("#report a").all_inner_texts() == ["metrics.png", "table.md"]
    finally:
        shutil.rmtree(folder)
