"""Write the README's picture of the explorer: the page over a finished study, in Debian's headless Chromium,
after uploading an image drawn here (a red disc and a blue square on a gray floor, 240x180 px), painting a
hidden region over the square and picking a target token in it.

    .venv/bin/python docs/explorer_screenshot.py explorer_demo docs/explorer.png
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from playwright.sync_api import sync_playwright

from ablate.explorer.explorer import Explorer
from ablate.explorer.server import running
from ablate.study_file import find_study_file, load_study

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
REDRAWN = "Number(document.body.dataset.renders || 0) > {}"


def drawn_image(path: Path) -> Path:
    """A picture of the kind the study's scenes show, drawn at another size and aspect: what a user might upload."""
    image = Image.new("RGB", (240, 180))
    draw = ImageDraw.Draw(image)
    for y in range(180):  # a floor lit from above, as the scenes' background
        draw.line([(0, y), (240, y)], fill=(int(110 + 40 * y / 180),) * 3)
    draw.ellipse([45, 40, 115, 110], fill=(205, 40, 40))
    draw.rectangle([130, 75, 185, 130], fill=(40, 70, 205))
    image.save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study")
    parser.add_argument("out")
    parser.add_argument("--width", type=int, default=1600)
    args = parser.parse_args()
    torch.set_num_threads(1)
    explorer = Explorer(load_study(find_study_file(args.study)))
    with running(explorer) as url, sync_playwright() as playwright, tempfile.TemporaryDirectory() as folder:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": args.width, "height": 1000})
        page.goto(url)
        page.wait_for_function(REDRAWN.format(0), timeout=120_000)

        def redraw(action) -> None:
            renders = page.evaluate("Number(document.body.dataset.renders)")
            action()
            page.wait_for_function(REDRAWN.format(renders), timeout=120_000)

        redraw(lambda: page.set_input_files("#upload", drawn_image(Path(folder) / "my_scene.png")))
        box = page.locator("#paint").bounding_box()
        cell = box["width"] / 8

        def stroke(cells: list[tuple[int, int]]) -> None:  # (col, row) corners of one brush stroke
            page.mouse.move(box["x"] + (cells[0][0] + 0.5) * cell, box["y"] + (cells[0][1] + 0.5) * cell)
            page.mouse.down()
            for col, row in cells[1:]:
                page.mouse.move(box["x"] + (col + 0.5) * cell, box["y"] + (row + 0.5) * cell, steps=8)
            page.mouse.up()

        redraw(lambda: stroke([(4, 3), (6, 3), (6, 4), (4, 4), (4, 5), (6, 5)]))  # a 3x3 block over the square
        first = page.locator(".column .predictions canvas").nth(1)  # semseg, after the in-painted rgb
        redraw(lambda: first.click(position={"x": 5.5 * 16, "y": 4.5 * 16}))
        page.wait_for_function("Number(document.body.dataset.featureUpdates || 0) > 0", timeout=120_000)
        page.screenshot(path=args.out, full_page=True)
        browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
