"""A studio's own game beside ours, as a studio would write it: content in worlds/, added actions in tinkers/."""
from __future__ import annotations

from pathlib import Path

WORLDS = Path(__file__).resolve().parent / "worlds"  # GAIA_KB_DATA_DIR takes it beside kb/data
ACTION_MODULES = ("examples.tinkers.actions",)  # GAIA_ACTION_MODULES: for the gateway and kb alike
