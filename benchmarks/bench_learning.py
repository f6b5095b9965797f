"""Learning curves: how fast a configuration learns the cross-modal tasks, per CPU-second and per step.

Trains one run (default: the quickstart study's base configuration with dirichlet_4m masking) and, every
``--every`` steps, scores a cheap evaluation on ``--eval-samples`` validation scenes: rgb_to_semseg mIoU,
rgb_to_depth delta1 and abs rel, rgb_to_caption attribute accuracy, the masked-token loss. Training CPU
seconds exclude the evaluations. Writes ``OUT.json`` (the curve, the trivial constants, the figure of
merit) and ``OUT.png`` (each metric against training CPU seconds).

Figure of merit: training CPU-seconds until rgb_to_semseg mIoU first reaches 0.5, and the metrics at the end.

Run: .venv/bin/python benchmarks/bench_learning.py data/scenes --out benchmarks/curves/NAME [OVERRIDE ...]
(overrides are config keys, e.g. train.lr=3e-3 masking=random; one torch thread unless --threads says).
     .venv/bin/python benchmarks/bench_learning.py data/scenes --compare A.json B.json --out benchmarks/curves/X
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import yaml

from model.config import compose
from model.evaluate import evaluate, trivial_baselines
from model.network import FourM
from model.run_setup import check
from model.train import TrainOptions, train

TASKS = ["rgb_to_semseg", "rgb_to_depth", "rgb_to_caption"]
CURVE_METRICS = ["rgb_to_semseg/miou", "rgb_to_depth/abs_rel", "rgb_to_depth/delta1", "rgb_to_caption/attr_acc",
                 "loss/mean"]
STUDY = Path(__file__).resolve().parents[1] / "studies" / "quickstart.yaml"


def quickstart_overrides() -> list[str]:
    """The quickstart study's fixed overrides, as ``key=value`` lines."""
    base = yaml.safe_load(STUDY.read_text())["base"]
    return [f"{k}={v}" for k, v in base.items() if k != "data.root"]


def first_reaching(curve: list[dict], key: str, bar: float) -> float | None:
    """Training CPU-seconds at the first point whose ``key`` is >= ``bar`` (None: never)."""
    return next((p["cpu_s"] for p in curve if p[key] >= bar), None)


def plot(curves: dict[str, list[dict]], trivial: dict[str, float], out: Path, title: str = "") -> None:
    """Each metric against training CPU seconds, one line per named curve, the trivial constants dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVE_METRICS), figsize=(4 * len(CURVE_METRICS), 3.4))
    for ax, key in zip(axes, CURVE_METRICS):
        for label, curve in curves.items():
            ax.plot([p["cpu_s"] for p in curve], [p[key] for p in curve], marker=".", label=label)
        if key in trivial:
            ax.axhline(trivial[key], color="grey", ls="--", lw=1, label="trivial constant")
        ax.set(xlabel="training CPU s", title=key)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def compare(paths: list[Path], out: Path) -> None:
    """Draw curves already written by this script side by side (``--compare A.json B.json ... --out X``)."""
    results = {p.stem: json.loads(p.read_text()) for p in paths}
    trivial = next(iter(results.values()))["trivial"]
    plot({name: r["curve"] for name, r in results.items()}, trivial, out.with_suffix(".png"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_root")
    ap.add_argument("overrides", nargs="*", help="config overrides on top of the quickstart's base")
    ap.add_argument("--out", required=True, help="output path without suffix (writes OUT.json and OUT.png)")
    ap.add_argument("--every", type=int, default=50, help="steps between evaluations")
    ap.add_argument("--eval-samples", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--compare", nargs="+", type=Path, help="draw these result files into OUT.png, no training")
    args = ap.parse_intermixed_args()
    if args.compare:
        return compare(args.compare, Path(args.out))
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    overrides = ["masking=dirichlet_4m", *quickstart_overrides(), *args.overrides]
    curve: list[dict] = []
    eval_cpu = 0.0
    start = time.process_time()

    def score(step: int, model: FourM) -> None:
        nonlocal eval_cpu
        if step % args.every and step != cfg.train.steps:
            return
        t0 = time.process_time()
        metrics = evaluate(model, setup.specs, args.data_root, num_samples=args.eval_samples, seed=cfg.eval.seed,
                           probe_samples=0, tasks=TASKS)
        spent = time.process_time() - t0
        eval_cpu += spent
        point = {"step": step, "cpu_s": t0 - start - (eval_cpu - spent), "eval_cpu_s": spent,
                 **{k: metrics[k] for k in CURVE_METRICS}}
        curve.append(point)
        print(json.dumps(point), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose([f"data.root={args.data_root}", *overrides, f"train.out_dir={tmp}/run",
                       "tracking.enabled=false", f"train.threads={args.threads}"])
        setup = check(cfg)
        train(cfg, TrainOptions(evaluate_at_end=False, progress=False, after_step=score))

    trivial = trivial_baselines(args.data_root, args.eval_samples)
    result = {
        "overrides": overrides,
        "threads": args.threads,
        "eval_samples": args.eval_samples,
        "curve": curve,
        "trivial": {k: trivial[k] for k in CURVE_METRICS if k in trivial},
        "cpu_s_to_semseg_miou_0.5": first_reaching(curve, "rgb_to_semseg/miou", 0.5),
        "final": curve[-1],
    }
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    plot({out.stem: curve}, result["trivial"], out.with_suffix(".png"), " ".join(args.overrides) or "quickstart base")
    print(json.dumps({k: result[k] for k in ("cpu_s_to_semseg_miou_0.5", "final")}))


if __name__ == "__main__":
    main()
