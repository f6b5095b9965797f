"""A run's checkpoints: saved complete or not at all, found by a pointer, loaded back by name.

A checkpoint is a folder of the run folder's ``checkpoints/`` (its name and the ``latest`` pointer:
``model/run_folder.py``) holding Accelerate's state (model, optimizer, RNGs). What Accelerate does not know
about (the LR schedule, the step and masking RNG, the masking strategy's adaptive state, the mask statistics)
is saved beside it as named states in ``states.pt``, so a reader asks for ``"masking"``, not for the position
at which somebody registered it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Protocol

import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from model.config import Config
from model.dataset import ModalitySpec
from model.masking import MaskingStrategy
from model.network import FourM
from model.run_folder import RunFolder
from model.run_setup import check

STATES = "states.pt"
# Checkpoints written before named states: Accelerate's custom_checkpoint_<i>.pkl, in registration order.
POSITIONAL = ("scheduler", "train", "masking", "mask_stats")


class Stateful(Protocol):
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


def save_checkpoint(accelerator: Accelerator, folder: RunFolder, step: int, states: dict[str, Stateful]) -> None:
    """Write a complete state (Accelerate's and the named ``states``), then atomically repoint ``latest``;
    a crash mid-write keeps the previous one. Every process calls it."""
    ckpt = folder.checkpoint(step)
    accelerator.save_state(str(ckpt))
    if accelerator.is_main_process:
        torch.save({key: obj.state_dict() for key, obj in states.items()}, ckpt / STATES)
        folder.point_latest(ckpt)
        for old in folder.saved_checkpoints():
            if old != ckpt:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def load_checkpoint(accelerator: Accelerator, ckpt: Path, states: dict[str, Stateful]) -> None:
    """Restore Accelerate's state and every named state from ``ckpt`` (every process calls it)."""
    accelerator.load_state(str(ckpt))
    saved = saved_states(ckpt)
    if missing := sorted(set(states) - set(saved)):
        raise FileNotFoundError(f"{ckpt}: no saved state for {', '.join(missing)}")
    for key, obj in states.items():
        obj.load_state_dict(saved[key])


def saved_states(ckpt: Path) -> dict[str, dict]:
    """The named states in ``ckpt`` (from an older checkpoint: its positional files, by their known order)."""
    if (ckpt / STATES).is_file():
        return torch.load(ckpt / STATES, map_location="cpu", weights_only=True)
    return {key: torch.load(path, map_location="cpu", weights_only=True)
            for i, key in enumerate(POSITIONAL) if (path := ckpt / f"custom_checkpoint_{i}.pkl").is_file()}


def _newest(folder: RunFolder) -> Path:
    ckpt = folder.latest_checkpoint()
    if ckpt is None:
        raise FileNotFoundError(f"{folder.path}: no checkpoint (train it with "
                                f"`ablate train train.out_dir={folder.path}`)")
    return ckpt


def load_run(run_dir: Path | str) -> tuple[FourM, Config, dict[str, ModalitySpec]]:
    """(model in eval mode, config, modality specs) of the run in ``run_dir``."""
    folder = RunFolder(run_dir)
    ckpt = _newest(folder)
    cfg = folder.read_config()
    setup = check(cfg)
    model = setup.new_model(cfg)
    model.load_state_dict(load_file(ckpt / "model.safetensors"))
    return model.eval(), cfg, setup.specs


def load_masking(run_dir: Path | str, cfg: Config) -> MaskingStrategy:
    """The run's masking strategy as it stood at its newest checkpoint: schedules at that step,
    adaptive state (``hard``'s loss map) restored."""
    ckpt = _newest(RunFolder(run_dir))
    masking = check(cfg).masking
    masking.set_progress(RunFolder.step_of(ckpt), cfg.train.steps)
    masking.load_state_dict(saved_states(ckpt)["masking"])
    return masking
