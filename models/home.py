"""Where fastdraft keeps pulled and converted models and the drafts built here: `$FASTDRAFT_HOME`, default `~/.cache/fastdraft`.

Boundary: computes paths only; creates nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "FASTDRAFT_HOME"
DEFAULT_HOME = Path("~/.cache/fastdraft")


def fastdraft_home() -> Path:
    """The root folder for fastdraft's caches (env FASTDRAFT_HOME, else ~/.cache/fastdraft)."""
    value = os.environ.get(HOME_ENV)
    return Path(value).expanduser() if value else DEFAULT_HOME.expanduser()


def models_home() -> Path:
    """`<home>/models`: one subfolder per model name, holding gguf/, hf/ and ir-<format>/ steps."""
    return fastdraft_home() / "models"


def model_dir(name: str) -> Path:
    """The cache folder of one model (catalog name, or a derived name for specs outside the catalog)."""
    return models_home() / name


def drafts_home() -> Path:
    """`<home>/drafts`: one IR folder per draft built on this machine (python -m training.build publishes there)."""
    return fastdraft_home() / "drafts"


def draft_dir(name: str) -> Path:
    """The folder of the locally built draft `name` (whether or not it exists yet)."""
    return drafts_home() / name
