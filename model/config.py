"""Typed configuration: dataclasses registered with Hydra, composed with ``key=value`` overrides.

``compose(["data.train_size=1000", "model=nano"])`` gives a validated ``Config``. Hydra
rejects unknown keys and wrong types; ``Config.validate`` checks ranges.
"""

from __future__ import annotations

import copy
import functools
import math
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from model.scenes import SceneConfig

CONF_DIR = Path(__file__).parent / "conf"


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key and what is allowed."""


GRID_BIAS = ("fixed", "learned", "none")
FEEDS = ("auto", "inline", "prefetch")


@dataclass
class ModelConfig:
    """The network's settings (``model/network.py``), kept here so that composing a config needs no torch."""

    dim: int = 192
    enc_depth: int = 4
    dec_depth: int = 4
    heads: int = 6
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    loss_weighting: str = "mod"  # "mod": mean of per-modality means (4M default); "token": mean over tokens
    # Image tokens embedded and predicted through their codebook entries' pixels (see FourM), where known.
    codebook_input: bool = True
    codebook_output: bool = True
    grid_bias: str = "fixed"  # relative position bias between image tokens (GridBias): fixed, learned or none

    def validate(self) -> ModelConfig:
        if self.dim < 4 or self.dim % 4:
            raise ValueError(f"model.dim={self.dim}: must be a positive multiple of 4 (2D sin-cos positions)")
        if self.heads < 1 or self.dim % self.heads:
            raise ValueError(f"model.heads={self.heads}: must be >= 1 and divide model.dim={self.dim}")
        for key in ("enc_depth", "dec_depth"):
            if getattr(self, key) < 1:
                raise ValueError(f"model.{key}={getattr(self, key)}: must be >= 1")
        if not 0 < self.mlp_ratio < math.inf:
            raise ValueError(f"model.mlp_ratio={self.mlp_ratio}: must be > 0")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"model.dropout={self.dropout}: must be in [0, 1)")
        if self.grid_bias not in GRID_BIAS:
            raise ValueError(f"model.grid_bias={self.grid_bias!r}: must be one of {', '.join(GRID_BIAS)}")
        if self.loss_weighting not in ("mod", "token"):
            raise ValueError(f"model.loss_weighting={self.loss_weighting!r}: must be one of mod, token")
        return self


MODEL_PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(dim=64, enc_depth=2, dec_depth=2, heads=4),  # tests
    # CPU quickstart: on 2 cores, more steps of a shallow model beat fewer of a deep one in 10 minutes.
    "nano": ModelConfig(dim=128, enc_depth=2, dec_depth=2, heads=4),
    "base": ModelConfig(dim=768, enc_depth=12, dec_depth=12, heads=12),  # about 4M-B
}


@dataclass
class CodebookConfig:
    """Patch tokenizer settings: codebook size per image modality, k-means effort."""

    patch: int = 4
    rgb: int = 1024
    depth: int = 256
    semseg: int = 512
    iters: int = 20
    sample: int = 150_000


@dataclass
class DataConfig:
    root: str = "data/scenes"
    seed: int = 0
    train_size: int = 50_000
    val_size: int = 1_000
    scene: SceneConfig = field(default_factory=SceneConfig)
    codebook: CodebookConfig = field(default_factory=CodebookConfig)

    def validate(self) -> None:
        self.scene.validate()
        if self.train_size < 1 or self.val_size < 1:
            raise ConfigError("data.train_size and data.val_size must be at least 1")
        cb = self.codebook
        if cb.patch < 1 or self.scene.canvas % cb.patch:
            raise ConfigError(f"data.codebook.patch={cb.patch}: must divide data.scene.canvas={self.scene.canvas}")
        for key in ("rgb", "depth", "semseg", "iters", "sample"):
            if getattr(cb, key) < 1:
                raise ConfigError(f"data.codebook.{key}={getattr(cb, key)}: must be at least 1")


@dataclass
class TrainConfig:
    """Optimization and run bookkeeping. Three RNG streams derive from ``seed``: init, data order, masks."""

    steps: int = 2000
    batch_size: int = 64
    grad_accum: int = 1
    lr: float = 2e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    seed: int = 0
    out_dir: str = "runs/default"
    log_every: int = 10
    checkpoint_every: int = 250
    mixed_precision: str = "auto"  # auto: bf16 on GPU, fp32 on CPU; or "no", "bf16"
    threads: int = 0  # torch CPU threads; 0 = torch's default
    # Batches made between steps (inline) or ahead in a background thread (prefetch, model/feed.py); auto:
    # prefetch on GPU, inline on CPU and for adaptive masking (it needs the last step's losses).
    feed: str = "auto"
    compile: bool = False  # torch.compile the network's trunk (FourM.compile_trunk)
    peak_tflops: float = 0.0  # one device's peak for train/mfu; 0: known GPUs' bf16 peak (model/flops.py)

    def validate(self) -> None:
        for key in ("steps", "batch_size", "grad_accum", "log_every", "checkpoint_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key}={getattr(self, key)}: must be at least 1")
        for key in ("lr", "min_lr", "weight_decay", "beta1", "beta2", "grad_clip"):
            if not math.isfinite(getattr(self, key)):
                raise ConfigError(f"train.{key}={getattr(self, key)}: must be a finite number")
        if not 0 < self.lr or not 0 <= self.min_lr <= self.lr:
            raise ConfigError(f"train.lr={self.lr}, train.min_lr={self.min_lr}: need 0 <= min_lr <= lr, lr > 0")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("train.warmup_steps, train.weight_decay and train.grad_clip must be >= 0")
        for key in ("beta1", "beta2"):
            if not 0 <= getattr(self, key) < 1:
                raise ConfigError(f"train.{key}={getattr(self, key)}: must be in [0, 1)")
        if self.mixed_precision not in ("auto", "no", "bf16"):
            raise ConfigError(f"train.mixed_precision={self.mixed_precision!r}: allowed auto, no, bf16")
        if self.feed not in FEEDS:
            raise ConfigError(f"train.feed={self.feed!r}: allowed {', '.join(FEEDS)}")
        if not 0 <= self.peak_tflops < math.inf:
            raise ConfigError(f"train.peak_tflops={self.peak_tflops}: must be finite and >= 0 (0: the device's)")


@dataclass
class EvalConfig:
    """Fixed-budget, fixed-seed evaluation on the validation split."""

    num_samples: int = 500
    batch_size: int = 100
    seed: int = 1234
    generation_steps: int = 8  # ROAR/MaskGIT steps per image modality
    probe_samples: int = 1000

    def validate(self) -> None:
        for key in ("num_samples", "batch_size", "generation_steps", "probe_samples"):
            if getattr(self, key) < 1:
                raise ConfigError(f"eval.{key}={getattr(self, key)}: must be at least 1")


@dataclass
class TrackingConfig:
    """MLflow: SQLite store by default; a run continues the MLflow run its folder names. ``request_timeout``:
    seconds one request may block a training step (what is not sent waits in the run folder)."""

    uri: str = "sqlite:///runs/mlflow.db"
    experiment: str = "nano4m"
    run_name: str = ""
    enabled: bool = True
    request_timeout: float = 10.0


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = MISSING
    masking: dict[str, Any] = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def validate(self) -> Config:
        try:
            self.data.validate()
            self.model.validate()
            self.train.validate()
            self.eval.validate()
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if "name" not in self.masking:
            raise ConfigError("masking.name is missing; choose a strategy with masking=<name>")
        return self


_store = ConfigStore.instance()
_store.store(name="base_config", node=Config)
for _name, _preset in MODEL_PRESETS.items():
    _store.store(group="model", name=_name, node=_preset)


def group_options() -> dict[str, list[str]]:
    """Config groups (``model``, ``masking``, ...) and their choices, as Hydra sees them."""
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        loader = GlobalHydra.instance().config_loader()
        return {g: sorted(loader.get_group_options(g)) for g in loader.list_groups("") if g != "hydra"}


def compose(overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Compose ``conf/config.yaml`` with overrides into a validated ``Config``.

    Hydra composes each distinct set of group choices (``model=tiny masking=block``) once per process;
    the other overrides are applied to a copy the way Hydra applies them after composing, so a study's
    thousands of configurations cost milliseconds each instead of a Hydra composition each.

    A masking parameter (``masking.input_alphas.rgb=0.5``) is set whether or not the chosen preset has it
    (Hydra's ``++``, added here for every caller: the command line and studies): the strategy itself refuses a
    parameter it does not take, naming those it does.
    """
    try:
        parsed = [_parse(f"++{line}" if line.startswith("masking.") else line) for line in overrides]
        composing = [o for o in parsed if o.key_or_group in _groups() or o.is_sweep_override() or o.is_hydra_override()]
        cfg = copy.deepcopy(_composed(tuple(o.input_line for o in composing)))
        # Hydra's own step (a private but long-stable static method), for exactly Hydra's semantics.
        ConfigLoaderImpl._apply_overrides_to_config([o for o in parsed if o not in composing], cfg)
        obj = OmegaConf.to_object(cfg)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_explain(e)) from None
    return obj.validate()


@functools.lru_cache(maxsize=65536)  # a study repeats each of its override lines across many configurations
def _parse(line: str) -> Override:
    return OverridesParser.create().parse_override(line)


@functools.cache
def _composed(overrides: tuple[str, ...]) -> DictConfig:
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        return hydra_compose("config", overrides=list(overrides))


@functools.cache
def _groups() -> frozenset[str]:
    """The config groups (``model``, ``masking``): overrides that choose among configs, not set values."""
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        return frozenset(GlobalHydra.instance().config_loader().list_groups(""))


def _explain(e: Exception) -> str:
    """A one-line message naming the bad key and what is allowed there."""
    cause = e.__cause__ if isinstance(e.__cause__, OmegaConfBaseException) else e
    key = getattr(cause, "full_key", None)
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and key:
        parent, _, leaf = key.rpartition(".")
        allowed = _keys_under(parent)
        return f"unknown config key {key!r}; allowed keys{' under ' + repr(parent) if parent else ''}: {allowed}"
    if key:
        return f"bad value for config key {key!r}: {str(cause).splitlines()[0]}"
    return f"bad configuration override: {str(e).splitlines()[0]}"


def _keys_under(parent: str) -> list[str]:
    """The keys of a config section, from the dataclasses (``model``'s node is MISSING until a preset is chosen)."""
    node: Any = Config
    for part in parent.split(".") if parent else []:
        node = typing.get_type_hints(node).get(part)
        if not is_dataclass(node):
            return []
    return sorted(f.name for f in fields(node))


def to_dict(cfg: Config) -> dict:
    """Plain nested dict of the resolved config (for YAML artifacts, params and hashing)."""
    return asdict(cfg)


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(to_dict(cfg)))


def from_dict(d: dict) -> Config:
    """Inverse of ``to_dict`` (used when a run is resumed from its saved config)."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), d)).validate()
