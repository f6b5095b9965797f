"""This machine's cache for nano4M: ``$XDG_CACHE_HOME/nano4m`` (``~/.cache/nano4m``). What is kept there can
always be made again (timed speeds, an empty MLflow store); deleting the folder loses nothing recorded."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nano4m"
