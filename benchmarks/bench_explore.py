"""How fast the explorer answers: one POST /api/predict for 4 strategies on one scene, through the real server.

    .venv/bin/python benchmarks/bench_explore.py [STUDY] [--scenes 10]

STUDY (default ``explorer_demo``, see ``studies/explorer_demo.yaml``) needs at least 4 finished maskings.
Torch runs on one thread, as ``ablate explore`` does. After one warm-up request, each question is asked
about held-out scenes 0..N-1 and the wall time of each answer is measured at the client:

- ``page default``: rgb given; semseg, depth and caption predicted (8 ROAR steps per image), the page's
  first question;
- ``+ boxes``: the same with boxes predicted too;
- ``in-painting``: rgb with 16 cells painted hidden; rgb in-painted, then semseg and caption (and, per
  strategy, the answer without hidden cells that the before/after view compares with), on a scene never
  asked about without hiding: that answer is generated too;
- ``in-painting, page flow``: the same, right after the same question without hidden cells (asked, not
  timed), as the page asks it: the answer without hidden cells is the one kept from that question;
- ``caption + image``: the scene's rgb with a typed caption given (a combined query); semseg and depth;
- ``upload``: the scene's rgb as a 128x128 PNG posted to /api/upload, then the page default about it
  (the time of both requests).

Per question: the client's median / min / max, the server's own time (its ``seconds``), the slowest
strategy's own time (``strategies[*].seconds``) and the response size.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import statistics
import time
from urllib.parse import urlsplit

import numpy as np
import torch
from PIL import Image

from ablate.explorer.explorer import Explorer
from ablate.explorer.server import running
from ablate.study_file import find_study_file, load_study

DEFAULT = {"given": ["rgb"], "targets": ["semseg", "depth", "caption"]}
INPAINTING = {"given": ["rgb"], "targets": ["semseg", "caption"],
              "hidden": [18, 19, 20, 21, 26, 27, 28, 29, 34, 35, 36, 37, 42, 43, 44, 45]}
QUESTIONS = {
    "page default": DEFAULT,
    "+ boxes": {"given": ["rgb"], "targets": ["semseg", "depth", "caption", "boxes"]},
    "in-painting": INPAINTING,
    "in-painting, page flow": INPAINTING,
    "caption + image": {"given": ["rgb", "caption"], "targets": ["semseg", "depth"]},
    "upload": DEFAULT,
}
TYPED = "large red circle and small blue square"


def post(url: str, path: str, body: bytes, content_type: str) -> dict:
    where = urlsplit(url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=120)
    conn.request("POST", path, body, {"Content-Type": content_type})
    response = conn.getresponse()
    out = json.loads(response.read())
    conn.close()
    if response.status != 200:
        raise SystemExit(f"{path}: {response.status}: {out['error']}")
    return out


def scene_png(explorer: Explorer, index: int) -> bytes:
    rgb = explorer.source.heldout(index).truth["rgb"]
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(rgb, np.uint8)).resize((128, 128), Image.Resampling.NEAREST).save(buffer, "PNG")
    return buffer.getvalue()


def ask(url: str, explorer: Explorer, name: str, body: dict, index: int) -> tuple[float, dict]:
    """One answer to question ``name`` about held-out scene ``index``: (client seconds, the prediction)."""
    scene = {"source": "heldout", "index": index}
    if name == "in-painting, page flow":
        unhidden = {k: v for k, v in body.items() if k != "hidden"}
        post(url, "/api/predict", json.dumps({**unhidden, "scene": scene}).encode(), "application/json")
    started = time.perf_counter()
    if name == "caption + image":
        scene |= {"caption": TYPED, "typed_caption": True}
    if name == "upload":
        uploaded = post(url, "/api/upload?name=scene.png", scene_png(explorer, index), "image/png")
        scene = {"source": "upload", "upload": uploaded["upload"]}
    out = post(url, "/api/predict", json.dumps({**body, "scene": scene}).encode(), "application/json")
    return time.perf_counter() - started, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?", default="explorer_demo")
    parser.add_argument("--scenes", type=int, default=10, help="held-out scenes asked about per question "
                        "(scenes 0..N-1; scene N warms up)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    explorer = Explorer(load_study(find_study_file(args.study)))
    maskings = list(explorer.strategies)[:4]
    if len(maskings) < 4:
        raise SystemExit(f"{args.study}: {len(maskings)} maskings with finished runs; the benchmark needs 4")
    model = explorer.strategies[maskings[0]].cfg.model
    print(f"study {args.study}: {maskings}, model dim {model.dim}, {model.enc_depth}+{model.dec_depth} layers, "
          f"torch threads {torch.get_num_threads()}")
    print("| question | median s | min s | max s | server s (median) | slowest strategy s (median) | response KiB |")
    print("|---|---|---|---|---|---|---|")
    with running(explorer) as url:
        for name, question in QUESTIONS.items():
            body = {"strategies": maskings, **question}
            ask(url, explorer, name, body, args.scenes)  # warm-up, on a scene outside the measured ones
            times, server, slowest, size = [], [], [], 0
            for index in range(args.scenes):
                seconds, out = ask(url, explorer, name, body, index)
                times.append(seconds)
                server.append(out["seconds"])
                slowest.append(max(c["seconds"] for c in out["strategies"].values()))
                size = max(size, len(json.dumps(out)))
            print(f"| {name} | {statistics.median(times):.3f} | {min(times):.3f} | {max(times):.3f} | "
                  f"{statistics.median(server):.3f} | {statistics.median(slowest):.3f} | {size / 1024:.0f} |")


if __name__ == "__main__":
    main()
