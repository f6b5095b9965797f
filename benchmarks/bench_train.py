"""Training throughput: tokens/s (non-pad encoder + decoder tokens), TFLOP/s and MFU of ``train()``, and where a
step's time goes (making the batch, forward + backward, optimizer).

Run: .venv/bin/python benchmarks/bench_train.py DATA_ROOT [--device cpu|cuda] [--model nano|base] [--compile]
     [--steps 60] [--rounds 3] [--against REV] [overrides ...]

Each measurement is one ``train()`` run in its own process (``--device cpu`` hides any GPU from it), averaged over
its log windows after the first (start-up). ``--against REV`` also checks REV out into a temporary git worktree
and alternates runs of it with runs of this tree, round by round, so that both see the same machine load; it
prints both and their ratio. The split is measured on this tree, in this process, with the device synchronized
between phases (so it is a little slower than training, where they overlap) and the batch made inline.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from model.config import compose
from model.dataset import batches, load_split
from model.feed import training_batches
from model.flops import Throughput, peak_tflops, train_flops
from model.run_setup import check
from model.train import optimizer_for

HERE = Path(__file__).resolve().parents[1]

# What a run reports, written against what every revision has: compose, train and history.jsonl.
RUN = """
import json, sys, tempfile
from pathlib import Path
import model
from model.config import compose
import model.train as T
with tempfile.TemporaryDirectory() as tmp:
    cfg = compose(json.loads(sys.argv[1]) + [f"train.out_dir={tmp}/run"])
    quiet = dict(evaluate_at_end=False, progress=False)
    # Revisions before TrainOptions took these as keyword arguments.
    T.train(cfg, T.TrainOptions(**quiet)) if hasattr(T, "TrainOptions") else T.train(cfg, **quiet)
    history = [json.loads(line) for line in (Path(tmp) / "run" / "history.jsonl").read_text().splitlines()]
print(json.dumps({"code": model.__file__, "history": history}))
"""


def run(tree: Path, overrides: list[str], device: str) -> dict[str, float]:
    """One training run of the code in ``tree``: mean tokens/s (and TFLOP/s, MFU where logged) after the first
    window."""
    env = {**os.environ, "PYTHONPATH": str(tree)} | ({"CUDA_VISIBLE_DEVICES": ""} if device == "cpu" else {})
    out = subprocess.run([sys.executable, "-c", RUN, json.dumps(overrides)], cwd=tree, env=env, check=True,
                         capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    if not Path(result["code"]).resolve().is_relative_to(tree.resolve()):
        raise RuntimeError(f"the run meant for {tree} imported {result['code']}")
    windows = result["history"][1:]
    keys = [k for k in Throughput.NAMES if k in windows[0]]
    return {k: statistics.mean(w[k] for w in windows) for k in keys}


def split(overrides: list[str], steps: int, device: torch.device) -> dict[str, float]:
    """Mean seconds per step of: making the batch (draw, mask, slice, pack, copy), forward + backward, optimizer;
    the achieved TFLOP/s and, where the peak is known, MFU. The first quarter of the steps (compilation,
    allocation) is left out."""
    cfg = compose(overrides)
    setup = check(cfg)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    model = setup.new_model(cfg).to(device).train()
    if cfg.train.compile:
        model.compile_trunk()
    optimizer = optimizer_for(model, cfg, fused=device.type == "cuda")
    t = dataclasses.replace(cfg.train, feed="inline")
    stream = batches(load_split(cfg.data.root, "train"), t.batch_size, torch.Generator().manual_seed(0))
    fed = training_batches(setup, stream, torch.Generator().manual_seed(1), slice(None), device, range(steps), t)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    def now() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    times, flops = [], []
    for _ in range(steps):
        start = now()
        _, enc, dec, _ = next(fed)
        made = now()
        with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
            loss = model.loss(enc, dec)[0]
        loss.backward()
        passed = now()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append((made - start, passed - made, now() - passed))
        flops.append(int(train_flops(cfg.model, model.vocab_sizes, enc, dec)))
    kept = slice(steps // 4, None)
    phases = {name: statistics.mean(x[i] for x in times[kept])
              for i, name in enumerate(("batch_s", "forward_backward_s", "optimizer_s"))}
    tflops = sum(flops[kept]) / sum(map(sum, times[kept])) / 1e12
    peak = peak_tflops(device, cfg.train.peak_tflops)
    return phases | {"tflops": tflops} | ({"mfu": tflops / peak} if peak else {})


def _rates(r: dict[str, float]) -> str:
    shown = [f"{r['train/tokens_per_s']:,.0f} tokens/s"]
    shown += [f"{r['train/tflops']:.4f} TFLOP/s"] if "train/tflops" in r else []  # older revisions: no FLOPs
    return ", ".join(shown + ([f"MFU {r['train/mfu']:.1%}"] if "train/mfu" in r else []))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_root")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--model", default="nano")
    ap.add_argument("--masking", default="dirichlet")
    ap.add_argument("--compile", action="store_true", help="train.compile=true (this tree only)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--against", metavar="REV", help="also run REV, alternating with this tree")
    ap.add_argument("overrides", nargs="*", help="more config overrides for every run (key=value)")
    args = ap.parse_intermixed_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device here")
    overrides = [f"data.root={Path(args.data_root).resolve()}", f"model={args.model}", f"masking={args.masking}",
                 f"train.steps={args.steps}", "tracking.enabled=false", f"train.log_every={max(args.steps // 6, 1)}",
                 f"train.checkpoint_every={args.steps}", *args.overrides]
    ours = overrides + ["train.compile=true"] * args.compile

    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this tree": HERE}
        if args.against:
            subprocess.run(["git", "-C", str(HERE), "worktree", "add", "--detach", f"{tmp}/old", args.against],
                           check=True, capture_output=True)
            trees[args.against] = Path(tmp) / "old"
        try:
            results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
            for i in range(args.rounds):
                for name, tree in trees.items():
                    results[name].append(run(tree, ours if tree == HERE else overrides, args.device))
                    print(f"round {i + 1}, {name}: {_rates(results[name][-1])}", flush=True)
        finally:
            if args.against:
                subprocess.run(["git", "-C", str(HERE), "worktree", "remove", "--force", f"{tmp}/old"], check=True)

    print(f"\n{args.model}, {args.masking}, {args.device}{', compiled' if args.compile else ''}, "
          f"{args.steps} steps x {args.rounds} rounds (median of rounds):")
    medians = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in results.items()}
    for name, median in medians.items():
        print(f"  {name}: {_rates(median)}")
    if args.against:
        ratio = medians["this tree"]["train/tokens_per_s"] / medians[args.against]["train/tokens_per_s"]
        print(f"  tokens/s, this tree / {args.against}: {ratio:.3f}")

    s = split(ours, args.steps, torch.device(args.device))
    print(f"step split (this tree, synchronized): batch {s['batch_s'] * 1e3:.1f} ms, forward+backward "
          f"{s['forward_backward_s'] * 1e3:.1f} ms, optimizer {s['optimizer_s'] * 1e3:.1f} ms; "
          f"{s['tflops']:.3f} TFLOP/s" + (f", MFU {s['mfu']:.1%}" if "mfu" in s else ""))


if __name__ == "__main__":
    main()
