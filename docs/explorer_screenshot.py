"""Write the README's picture of the explorer: the page over a finished study, in Debian's headless Chromium,
after painting a hidden region and picking a target token on a scene with several objects.

    .venv/bin/python docs/explorer_screenshot.py explorer_demo docs/explorer.png
"""

from __future__ import annotations

import argparse

import torch
from playwright.sync_api import sync_playwright

from ablate.explorer.explorer import Explorer
from ablate.explorer.server import running
from ablate.study_file import find_study_file, load_study
from model.mask_figure import pick_scene

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
REDRAWN = "Number(document.body.dataset.renders || 0) > {}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study")
    parser.add_argument("out")
    parser.add_argument("--width", type=int, default=1600)
    args = parser.parse_args()
    torch.set_num_threads(1)
    explorer = Explorer(load_study(find_study_file(args.study)))
    scene = pick_scene(explorer.source.val)
    with running(explorer) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": args.width, "height": 1000})
        page.goto(url)
        page.wait_for_function(REDRAWN.format(0), timeout=120_000)

        def redraw(action) -> None:
            renders = page.evaluate("Number(document.body.dataset.renders)")
            action()
            page.wait_for_function(REDRAWN.format(renders), timeout=120_000)

        redraw(lambda: (page.fill("#index", str(scene)), page.dispatch_event("#index", "change")))
        box = page.locator("#paint").bounding_box()
        cell = box["width"] / 8

        def stroke(cells: list[tuple[int, int]]) -> None:  # (col, row) corners of one brush stroke
            page.mouse.move(box["x"] + (cells[0][0] + 0.5) * cell, box["y"] + (cells[0][1] + 0.5) * cell)
            page.mouse.down()
            for col, row in cells[1:]:
                page.mouse.move(box["x"] + (col + 0.5) * cell, box["y"] + (row + 0.5) * cell, steps=8)
            page.mouse.up()

        redraw(lambda: stroke([(4, 2), (6, 2), (6, 3), (4, 3), (4, 4), (6, 4)]))  # a 3x3 block
        first = page.locator(".column .predictions canvas").nth(1)  # semseg, after the in-painted rgb
        redraw(lambda: first.click(position={"x": 5.5 * 16, "y": 3.5 * 16}))
        page.wait_for_function("Number(document.body.dataset.featureUpdates || 0) > 0", timeout=120_000)
        page.screenshot(path=args.out, full_page=True)
        browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
