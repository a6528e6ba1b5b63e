"""Tables generated into hand-written documents, between two markers, and the command that writes or checks them."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable


def between_markers(document: str, start: str, end: str, body: str) -> str:
    """`document` with the text between `start` and `end` replaced by `body`."""
    head, rest = document.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def write_or_check(argv: list[str] | None, what: str, fill: Callable[[str], str]) -> int:
    """`--write FILE` puts the fresh table in; `--check FILE` exits 1 when the file's table is stale."""
    parser = argparse.ArgumentParser(description=f"write or check the {what} in a document")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", metavar="FILE")
    group.add_argument("--check", metavar="FILE")
    args = parser.parse_args(argv)
    path = Path(args.write or args.check)
    text = path.read_text()
    fresh = fill(text)
    if args.write:
        path.write_text(fresh)
        print(f"wrote the {what} into {path}")
    elif fresh != text:
        print(f"stale {what} in {path} (run `make docs`)", file=sys.stderr)
        return 1
    return 0
