"""Writes the Unity `.meta` file (a new random GUID, kept forever) for every asset of clients/unity lacking one."""
from __future__ import annotations

import logging
import sys
import uuid
from pathlib import Path

log = logging.getLogger(__name__)
PACKAGE = Path(__file__).resolve().parent.parent / "clients" / "unity"
TAIL = "  externalObjects: {}\n  userData: \n  assetBundleName: \n  assetBundleVariant: \n"
IMPORTERS = {".cs": "MonoImporter:\n  externalObjects: {}\n  serializedVersion: 2\n  defaultReferences: []\n"
                    "  executionOrder: 0\n  icon: {instanceID: 0}\n  userData: \n  assetBundleName: \n"
                    "  assetBundleVariant: \n",
             ".asmdef": "AssemblyDefinitionImporter:\n" + TAIL,
             ".md": "TextScriptImporter:\n" + TAIL,
             ".json": "TextScriptImporter:\n" + TAIL}


def hidden(name: str) -> bool:
    """Names Unity's asset database skips (no .meta, not imported)."""
    return name.startswith(".") or name.endswith("~") or name.lower() == "cvs" or name.endswith(".tmp")


def assets(root: Path = PACKAGE) -> list[Path]:
    """Every file and folder that needs a .meta: all but the hidden ones and the .meta files themselves.

    Files inside a hidden folder (Samples~, Tests~) get one too: a sample is copied into the
    project's Assets with its .meta, so its GUIDs stay the same in every project.
    """
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.suffix == ".meta" or hidden(rel.parts[-1]):
            continue
        found.append(path)
    return found


def meta_text(path: Path, guid: str) -> str:
    """The .meta Unity 2021.3 writes for this kind of asset."""
    head = f"fileFormatVersion: 2\nguid: {guid}\n"
    if path.is_dir():
        return head + "folderAsset: yes\nDefaultImporter:\n" + TAIL
    if path.name == "package.json":
        return head + "PackageManifestImporter:\n" + TAIL
    return head + IMPORTERS.get(path.suffix, "DefaultImporter:\n" + TAIL)


def main(argv: list[str] | None = None) -> int:
    """Write the missing .meta files; print each one written."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = Path((argv or sys.argv[1:] or [str(PACKAGE)])[0])
    for path in assets(root):
        meta = path.with_name(path.name + ".meta")
        if not meta.exists():
            meta.write_text(meta_text(path, uuid.uuid4().hex))
            log.info("wrote %s", meta.relative_to(root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
