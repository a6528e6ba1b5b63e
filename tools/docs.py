"""`make docs`: every document generated from the code, written or checked in one command.

`python -m tools.docs --write` writes them; `--check` exits 1 and names each stale one. What it makes:
the API documents in docs/ (gateway/apidocs.py, kb/apidocs.py) and the two tables in docs/security.md
(the NATS permissions of shared/natsauth.py, the limits of gateway/edge/scopes.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import examples
from gateway import apidocs as gateway_apidocs
from gateway.edge.scopes import limits_table
from kb import apidocs as kb_apidocs
from shared.apidocs import render
from shared.natsauth import permission_table
from shared.schemas.actions import load_modules

ROOT = Path(__file__).resolve().parent.parent
PERMISSIONS_MARKERS = ("<!-- permissions: generated from shared/natsauth.py by `make docs`; do not edit -->",
                       "<!-- end of generated permissions -->")
LIMITS_MARKERS = ("<!-- limits: generated from gateway/edge/scopes.py by `make docs`; do not edit -->",
                  "<!-- end of generated limits -->")


def between_markers(document: str, markers: tuple[str, str], body: str) -> str:
    """`document` with the text between the two markers replaced by `body`."""
    start, end = markers
    head, rest = document.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def with_permission_table(document: str) -> str:
    """`document` with its permission table replaced by the current one."""
    return between_markers(document, PERMISSIONS_MARKERS, permission_table())


def with_limits_table(document: str) -> str:
    """`document` with its limits table replaced by the current one."""
    return between_markers(document, LIMITS_MARKERS, limits_table())


def api_documents() -> dict[str, str]:
    """Every API document by file name, rendered as the services of `make run` serve it (the example's actions too)."""
    load_modules(examples.ACTION_MODULES)
    builders = {**gateway_apidocs.DOCUMENTS, **kb_apidocs.DOCUMENTS}
    return {name: render(build()) for name, build in builders.items()}


def _always(text: str) -> Callable[[str], str]:
    return lambda _old: text


def generated(docs: Path) -> dict[Path, Callable[[str], str]]:
    """Each generated file under `docs` and how to make its fresh text from its current text."""
    files: dict[Path, Callable[[str], str]] = {docs / name: _always(text) for name, text in api_documents().items()}
    files[docs / "security.md"] = lambda old: with_limits_table(with_permission_table(old))
    return files


def write_or_check(docs: Path, write: bool) -> list[Path]:
    """Write every generated file (returns them all), or return the stale ones."""
    touched = []
    for path, fresh in generated(docs).items():
        old = path.read_text() if path.exists() else ""
        text = fresh(old)
        if write:
            path.write_text(text)
            touched.append(path)
        elif text != old:
            touched.append(path)
    return touched


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.docs", description="write or check the generated docs")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true")
    group.add_argument("--check", action="store_true")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="the docs folder (default: the repo's)")
    args = parser.parse_args(argv)
    touched = write_or_check(args.docs, args.write)
    if args.write:
        print("wrote " + ", ".join(str(p) for p in touched))
        return 0
    if touched:
        print("stale (run `make docs`): " + ", ".join(str(p) for p in touched), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
