"""A run's checkpoints: saved complete or not at all, found by a pointer, loaded back by name.

A run folder's ``checkpoints/`` holds Accelerate states ``step_XXXXXXX/`` (model, optimizer, RNGs)
and ``latest``, naming the newest complete one. What Accelerate does not know about (the LR
schedule, the step and masking RNG, the masking strategy's adaptive state, the mask statistics)
is saved beside it as named states in ``states.pt``, so a reader asks for ``"masking"``, not for
the position at which somebody registered it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Protocol

import torch
import yaml
from accelerate import Accelerator
from safetensors.torch import load_file

from model.config import Config, from_dict
from model.dataset import ModalitySpec
from model.masking import MaskingStrategy
from model.network import FourM
from model.run_setup import check

STATES = "states.pt"
# Checkpoints written before named states: Accelerate's custom_checkpoint_<i>.pkl, in registration order.
POSITIONAL = ("scheduler", "train", "masking", "mask_stats")


class Stateful(Protocol):
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete checkpoint of the run in ``out_dir``, or None."""
    pointer = out_dir / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = out_dir / "checkpoints" / pointer.read_text().strip()
    return path if path.is_dir() else None


def save_checkpoint(accelerator: Accelerator, out_dir: Path, step: int, states: dict[str, Stateful]) -> None:
    """Write a complete state (Accelerate's and the named ``states``), then atomically repoint ``latest``;
    a crash mid-write keeps the previous one. Every process calls it."""
    ckpt_dir = out_dir / "checkpoints"
    name = f"step_{step:07d}"
    accelerator.save_state(str(ckpt_dir / name))
    if accelerator.is_main_process:
        torch.save({key: obj.state_dict() for key, obj in states.items()}, ckpt_dir / name / STATES)
        tmp = ckpt_dir / "latest.tmp"
        tmp.write_text(name)
        os.replace(tmp, ckpt_dir / "latest")
        for old in ckpt_dir.glob("step_*"):
            if old.name != name:
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
    masking.load_state_dict(saved_states(ckpt)["masking"])
    return masking
