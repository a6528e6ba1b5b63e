"""`gaia-kb check DIR` (`make check-world DIR=...`): every problem of an experience, or a folder of them, at once.

One line per problem: the file, the JSON path in it and what is wrong; exit 2 when there is any, 0
when kb would load every experience. Never a traceback: whatever goes wrong is a problem line.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kb.actions import AddedActions
from kb.world.content import FILES, check_folder
from kb.world.contentcheck import ActionCheck
from shared.config import Settings
from shared.schemas.actions import ActionError
from shared.subjects import BadSubjectToken, check_token

PROBLEMS = 2


def experiences(target: Path) -> list[Path]:
    """The experience folders `target` names: itself if it holds content files, else its subfolders that do."""
    if any((target / name).exists() for name in FILES):
        return [target]
    return sorted(p for p in target.iterdir() if p.is_dir() and (p / "zone.json").is_file()) if target.is_dir() else []


def check(target: Path, modules: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(problem lines, the experiences checked) for a folder, with the actions these modules add."""
    lines: list[str] = []
    checks: dict[str, ActionCheck | None] = {}
    try:
        checks = AddedActions.load(modules).checks
    except ActionError as exc:
        lines.append(f"GAIA_ACTION_MODULES: {exc}")
    folders = experiences(target)
    if not folders:
        what = "does not exist" if not target.exists() else "holds no experience"
        lines.append(f"{target}: {what} (an experience is a folder with {', '.join(FILES)}, or pass a folder "
                     "of such folders)")
    for folder in folders:
        try:
            check_token(folder.name)
        except BadSubjectToken:
            lines.append(f"{folder}: the folder's name is the experience id: letters, digits, '-' and '_' only")
        lines += [f"{folder}/{problem}" for problem in check_folder(folder, checks)]
    return lines, [f.name for f in folders]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gaia-kb check", description="check an experience's content files")
    parser.add_argument("folder", type=Path, help="an experience's folder, or a folder of experiences")
    parser.add_argument("--actions", default=None,
                        help="modules adding actions, comma-separated (default: $GAIA_ACTION_MODULES)")
    args = parser.parse_args(argv)
    raw = args.actions if args.actions is not None else os.environ.get("GAIA_ACTION_MODULES", "")
    modules = Settings.from_env({"GAIA_ACTION_MODULES": raw}).action_modules
    try:
        lines, checked = check(args.folder, modules)
    except Exception as exc:  # noqa: BLE001 - a checker never answers with a traceback
        lines, checked = [f"{args.folder}: the check itself failed: {type(exc).__name__}: {exc}"], []
    for line in lines:
        print(line)
    if lines:
        print(f"{len(lines)} problem(s); nothing was loaded", file=sys.stderr)
        return PROBLEMS
    print(f"ok: {', '.join(checked)}")
    return 0
