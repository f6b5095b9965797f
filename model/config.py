"""Typed configuration: dataclasses registered with Hydra, composed with ``key=value`` overrides.

``compose(["data.train_size=1000", "model=nano"])`` gives a validated ``Config``. Hydra
rejects unknown keys and wrong types; ``Config.validate`` checks ranges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from model.scenes import SceneConfig

CONF_DIR = Path(__file__).parent / "conf"


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key and what is allowed."""


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
class Config:
    data: DataConfig = field(default_factory=DataConfig)

    def validate(self) -> Config:
        try:
            self.data.validate()
        except ValueError as e:
            raise ConfigError(str(e)) from None
        return self


ConfigStore.instance().store(name="base_config", node=Config)


def compose(overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Compose ``conf/config.yaml`` with overrides into a validated ``Config``."""
    try:
        with initialize_config_dir(str(CONF_DIR), version_base=None):
            cfg = hydra_compose("config", overrides=list(overrides))
        obj = OmegaConf.to_object(cfg)
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_explain(e)) from None
    return obj.validate()


def _explain(e: Exception) -> str:
    """A one-line message naming the bad key and what is allowed there."""
    cause = e.__cause__ if isinstance(e.__cause__, OmegaConfBaseException) else e
    key = getattr(cause, "full_key", None)
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and key:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.structured(Config)
        node = OmegaConf.select(node, parent) if parent else node
        allowed = sorted(node.keys()) if hasattr(node, "keys") else []
        return f"unknown config key {key!r}; allowed keys{' under ' + repr(parent) if parent else ''}: {allowed}"
    if key:
        return f"bad value for config key {key!r}: {str(cause).splitlines()[0]}"
    return f"bad configuration override: {str(e).splitlines()[0]}"


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
