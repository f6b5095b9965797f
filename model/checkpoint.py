"""Load a trained run back: its resolved config and the model weights of its newest checkpoint."""

from __future__ import annotations

from pathlib import Path

import yaml
from safetensors.torch import load_file

from model.config import Config, from_dict
from model.dataset import DatasetSpec, ModalitySpec
from model.network import FourM
from model.train import latest_checkpoint


def load_run(run_dir: Path | str) -> tuple[FourM, Config, dict[str, ModalitySpec]]:
    """(model in eval mode, config, modality specs) of the run in ``run_dir``."""
    run_dir = Path(run_dir)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint (train it with `ablate train train.out_dir={run_dir}`)")
    cfg = from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    specs = DatasetSpec.load(cfg.data.root).modalities
    model = FourM(cfg.model, specs)
    model.load_state_dict(load_file(ckpt / "model.safetensors"))
    return model.eval(), cfg, specs
