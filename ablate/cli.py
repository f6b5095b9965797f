"""The ``ablate`` command line. Each subcommand is a small function; overrides are ``key=value``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model.config import ConfigError, compose
from model.dataset import DataFormatError

EPILOG = "Overrides are Hydra-style key=value pairs, e.g. data.train_size=2000 data.scene.canvas=32."


def data_build(args: argparse.Namespace) -> None:
    from model.build import build, fidelity_table

    cfg = compose(args.overrides).data
    fidelity = build(cfg, force=args.force)
    print(f"\nData set written to {Path(cfg.root).resolve()}\n")
    print("Tokenizer round-trip fidelity on the validation split:\n")
    print(fidelity_table(fidelity))


def data_show(args: argparse.Namespace) -> None:
    from model.show import show

    cfg = compose(args.overrides).data
    out = show(cfg.root, args.out or Path(cfg.root) / "show.png", num_scenes=args.scenes)
    print(f"wrote {out}")


def train(args: argparse.Namespace) -> None:
    from model.train import train as run_training

    cfg = compose(args.overrides)
    results = run_training(cfg, evaluate_at_end=not args.no_eval)
    if not args.no_eval:
        from model.evaluate import format_table

        print("\n" + format_table(results))
        print(f"\nevaluation written to {Path(cfg.train.out_dir) / 'eval.json'}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ablate", description="nano4M: pre-train small 4M models and ablate their masking."
    )
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="build or look at the generated multimodal data set")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    b = data_sub.add_parser(
        "build",
        help="render scenes, fit tokenizers, write tokens and a fidelity report into data.root",
        epilog=EPILOG,
    )
    b.add_argument("overrides", nargs="*", help="config overrides (key=value)")
    b.add_argument("--force", action="store_true", help="rebuild even if data.root holds this recipe already")
    b.set_defaults(func=data_build)
    s = data_sub.add_parser(
        "show", help="write a PNG: each modality decoded from its tokens next to its ground truth", epilog=EPILOG
    )
    s.add_argument("overrides", nargs="*", help="config overrides (key=value), e.g. data.root=...")
    s.add_argument("--out", type=Path, help="PNG path (default: DATA_ROOT/show.png)")
    s.add_argument("--scenes", type=int, default=4, help="how many validation scenes (default 4)")
    s.set_defaults(func=data_show)
    t = sub.add_parser(
        "train",
        help="pre-train a nano4M model on data.root, evaluate it, track it in MLflow",
        description="Train (or resume, if train.out_dir holds a checkpoint) one model, then evaluate it.",
        epilog="Example: ablate train model=nano masking=dirichlet masking.input_alphas.rgb=0.5 train.steps=2000. "
        "Config groups: model=tiny|nano|base, masking=random|dirichlet|block|aligned|sparse|dense|hard. " + EPILOG,
    )
    t.add_argument("overrides", nargs="*", help="config overrides (key=value)")
    t.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    t.set_defaults(func=train)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args, extra = p.parse_known_args(argv)
    # argparse stops filling a nargs="*" positional at the first flag; overrides after flags land here.
    if extra and hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
        args.overrides += extra
    elif extra:
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        args.func(args)
    except (ConfigError, DataFormatError) as e:
        print(f"ablate: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
