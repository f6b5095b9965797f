"""Scenes per second for rendering and for tokenization on this machine.

Run: .venv/bin/python benchmarks/bench_data.py [--scenes N]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from model.build import build, load_tokenizers, render_split
from model.config import compose
from model.modalities import MODALITIES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scenes", type=int, default=50_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose([f"data.root={tmp}/scenes", f"data.train_size={args.scenes}"]).data
        t0 = time.perf_counter()
        build(cfg, progress=False)
        total = time.perf_counter() - t0

        n = 10_000
        t0 = time.perf_counter()
        scenes = render_split(cfg, "train", n, progress=False)
        t_render = time.perf_counter() - t0
        toks = load_tokenizers(cfg.root)
        t0 = time.perf_counter()
        for name, mod in MODALITIES.items():
            toks[name].encode(mod.truth(cfg.scene, scenes))
        t_tok = time.perf_counter() - t0
    print(f"full build, {args.scenes} train + {cfg.val_size} val scenes (render, fit, encode, write): {total:.1f} s")
    print(f"render:   {n / t_render:,.0f} scenes/s")
    print(f"tokenize: {n / t_tok:,.0f} scenes/s (all 5 modalities, fitted tokenizers)")


if __name__ == "__main__":
    main()
