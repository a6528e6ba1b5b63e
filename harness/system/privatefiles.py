"""Files that hold secrets (NATS passwords, credentials): 0600 in a 0700 folder, whatever the umask."""
from __future__ import annotations

import os
from pathlib import Path

FILE_MODE = 0o600
FOLDER_MODE = 0o700


def private_folder(path: Path) -> Path:
    """Create `path` (and its parents) if needed and make it readable by its owner only."""
    path.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
    path.chmod(FOLDER_MODE)  # mkdir's mode is cut by the umask and does not apply to an existing folder
    return path


def write_private(path: Path, text: str) -> Path:
    """Write `text` to `path` readable and writable by its owner only, never readable by others on the way."""
    private_folder(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # an existing file keeps its old mode through O_CREAT
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    return path
