"""How fast the explorer answers: one POST /api/predict for 4 strategies on one scene, through the real server.

    .venv/bin/python benchmarks/bench_explore.py [STUDY] [--scenes 10]

STUDY (default ``explorer_demo``, see ``studies/explorer_demo.yaml``) needs at least 4 finished masking
families. Torch runs on one thread, as ``ablate explore`` does. After one warm-up request, each question
is asked about held-out scenes 0..N-1 and the wall time of each request is measured at the client:

- ``page default``: rgb given; semseg, depth and caption predicted (8 ROAR steps per image), the page's
  first question;
- ``+ boxes``: the same with boxes predicted too;
- ``in-painting``: rgb with 16 cells painted hidden; rgb in-painted, then semseg and caption.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import time
from urllib.parse import urlsplit

import torch

from ablate.explorer.explorer import Explorer
from ablate.explorer.server import running
from ablate.study_file import find_study_file, load_study

QUESTIONS = {
    "page default": {"given": ["rgb"], "targets": ["semseg", "depth", "caption"]},
    "+ boxes": {"given": ["rgb"], "targets": ["semseg", "depth", "caption", "boxes"]},
    "in-painting": {"given": ["rgb"], "targets": ["semseg", "caption"], "hidden": [18, 19, 20, 21, 26, 27, 28, 29,
                                                                                   34, 35, 36, 37, 42, 43, 44, 45]},
}


def ask(url: str, body: dict) -> tuple[float, dict]:
    where = urlsplit(url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=120)
    started = time.perf_counter()
    conn.request("POST", "/api/predict", json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    out = json.loads(response.read())
    seconds = time.perf_counter() - started
    conn.close()
    if response.status != 200:
        raise SystemExit(f"{response.status}: {out['error']}")
    return seconds, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?", default="explorer_demo")
    parser.add_argument("--scenes", type=int, default=10, help="held-out scenes asked about per question")
    args = parser.parse_args()
    torch.set_num_threads(1)
    explorer = Explorer(load_study(find_study_file(args.study)))
    families = list(explorer.strategies)[:4]
    if len(families) < 4:
        raise SystemExit(f"{args.study}: {len(families)} families with finished runs; the benchmark needs 4")
    model = explorer.strategies[families[0]].cfg.model
    print(f"study {args.study}: {families}, model dim {model.dim}, {model.enc_depth}+{model.dec_depth} layers, "
          f"torch threads {torch.get_num_threads()}")
    print("| question | median s | min s | max s | server s (median) | response KiB |")
    print("|---|---|---|---|---|---|")
    with running(explorer) as url:
        for name, question in QUESTIONS.items():
            body = {"strategies": families, **question}
            ask(url, body)  # warm-up
            times, server, size = [], [], 0
            for index in range(args.scenes):
                seconds, out = ask(url, {**body, "scene": {"source": "heldout", "index": index}})
                times.append(seconds)
                server.append(out["seconds"])
                size = max(size, len(json.dumps(out)))
            print(f"| {name} | {statistics.median(times):.3f} | {min(times):.3f} | {max(times):.3f} | "
                  f"{statistics.median(server):.3f} | {size / 1024:.0f} |")


if __name__ == "__main__":
    main()
