"""Where the rigs keep what they build once and reuse: `~/.cache/income-bundle/<name>` (or under
$XDG_CACHE_HOME), outside the checkout, unless the rig's own variable names another folder."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir(name: str, override_env: str | None = None) -> Path:
    """The cache folder `name` of income-bundle, or $`override_env` when that is set."""
    if override_env and (configured := os.environ.get(override_env)):
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "income-bundle" / name
