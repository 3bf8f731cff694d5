"""Where the suite writes what it produces."""

from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    env = os.environ.get("KASSA_REPO_ROOT")
    return Path(env) if env else Path(__file__).resolve().parents[2]


def shots_dir() -> Path:
    """Screenshots (and failure reports under failures/): KASSA_BROWSER_SHOTS, else
    target/browser-shots in the repository."""
    env = os.environ.get("KASSA_BROWSER_SHOTS")
    path = Path(env) if env else repo_root() / "target" / "browser-shots"
    path.mkdir(parents=True, exist_ok=True)
    return path
