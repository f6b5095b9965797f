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
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except (ConfigError, DataFormatError) as e:
        print(f"ablate: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
