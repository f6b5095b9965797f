"""Training throughput: tokens per second (non-pad encoder + decoder tokens) for a model preset on this machine.

Run: .venv/bin/python benchmarks/bench_train.py DATA_ROOT [--model nano] [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from model.config import compose
from model.train import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("data_root")
    ap.add_argument("--model", default="nano")
    ap.add_argument("--masking", default="dirichlet")
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose([f"data.root={args.data_root}", f"model={args.model}", f"masking={args.masking}",
                       f"train.steps={args.steps}", f"train.out_dir={tmp}/run", "tracking.enabled=false",
                       f"train.log_every={args.steps // 3}", f"train.checkpoint_every={args.steps}"])
        train(cfg, evaluate_at_end=False, progress=False)
        history = [json.loads(line) for line in (Path(tmp) / "run" / "history.jsonl").read_text().splitlines()]
    rate = [h["train/tokens_per_s"] for h in history[1:]]  # the first window includes start-up
    print(f"{args.model}, {args.masking}, batch {cfg.train.batch_size}: {sum(rate) / len(rate):,.0f} tokens/s "
          f"(windows of {args.steps // 3} steps: {', '.join(f'{r:,.0f}' for r in rate)})")


if __name__ == "__main__":
    main()
