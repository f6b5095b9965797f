"""Load a trained run back: its resolved config, the model weights and the masking state of its newest checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from model.config import Config, from_dict
from model.dataset import ModalitySpec
from model.masking import MaskingStrategy
from model.network import FourM
from model.train import check, latest_checkpoint

# model/train.py registers the scheduler, the TrainState and then the masking strategy with Accelerate,
# which saves each one's state_dict as custom_checkpoint_<index>.pkl in that order.
MASKING_STATE = "custom_checkpoint_2.pkl"


def _newest(run_dir: Path) -> Path:
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint (train it with `ablate train train.out_dir={run_dir}`)")
    return ckpt


def load_run(run_dir: Path | str) -> tuple[FourM, Config, dict[str, ModalitySpec]]:
    """(model in eval mode, config, modality specs) of the run in ``run_dir``."""
    run_dir = Path(run_dir)
    ckpt = _newest(run_dir)
    cfg = from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    setup = check(cfg)
    model = setup.new_model(cfg)
    model.load_state_dict(load_file(ckpt / "model.safetensors"))
    return model.eval(), cfg, setup.specs


def load_masking(run_dir: Path | str, cfg: Config) -> MaskingStrategy:
    """The run's masking strategy as it stood at its newest checkpoint: schedules at that step,
    adaptive state (``hard``'s loss map) restored."""
    ckpt = _newest(Path(run_dir))
    masking = check(cfg).masking
    step = int(ckpt.name.removeprefix("step_"))
    masking.set_progress(step, cfg.train.steps)
    masking.load_state_dict(torch.load(ckpt / MASKING_STATE, map_location="cpu", weights_only=True))
    return masking
