"""`make unity-release`: tag the Unity package's version as `unity-v<version>`, once everything says the same version.

The tag is what a game pins in its git URL (`...?path=/clients/unity#unity-v<version>`, docs/unity.md), so
it is made only when the commit it marks is a release: the working tree clean (the files checked are the
committed ones), package.json's `version`, the CHANGELOG's top entry (`## X.Y.Z - YYYY-MM-DD`) and the
assembly's version (Runtime/AssemblyInfo.cs: AssemblyVersion, AssemblyFileVersion, AssemblyInformationalVersion)
all equal, and no tag of that name yet. The tag is annotated, its message the CHANGELOG entry. Pushing it is
left to the one releasing (`git push origin unity-v<version>`).
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "clients/unity"
TAG_PREFIX = "unity-v"
SEMVER = re.compile(r"\d+\.\d+\.\d+")
ENTRY = re.compile(r"^## (?P<version>\S+)(?: - (?P<date>\d{4}-\d{2}-\d{2}))?[ \t]*$", re.M)
ASSEMBLY = re.compile(r'^\[assembly:\s*(?P<kind>Assembly(?:File|Informational)?Version)\("(?P<version>[^"]*)"\)\]',
                      re.M)
ASSEMBLY_KINDS = ("AssemblyVersion", "AssemblyFileVersion", "AssemblyInformationalVersion")


class Refused(Exception):
    """The release step will not tag: why, for the one releasing."""


def versions(read: Callable[[str], str]) -> dict[str, str]:
    """Every place that states the package's version, by name; `read` gives a file's text by its package path."""
    found = {"package.json": str(json.loads(read("package.json")).get("version", ""))}
    changelog = read("CHANGELOG.md")
    top = ENTRY.search(changelog)
    if top is None:
        raise Refused("CHANGELOG.md has no `## <version> - <date>` entry")
    if top["date"] is None:
        raise Refused(f"the CHANGELOG's top entry `{top[0].strip()}` has no date: `## <version> - YYYY-MM-DD`")
    found["CHANGELOG.md"] = top["version"]
    stated = {m["kind"]: m["version"] for m in ASSEMBLY.finditer(read("Runtime/AssemblyInfo.cs"))}
    for kind in ASSEMBLY_KINDS:
        found[f"Runtime/AssemblyInfo.cs {kind}"] = stated.get(kind, "(missing)")
    return found


def agreed(found: dict[str, str]) -> str:
    """The one version they all state, or Refused naming each."""
    version = found["package.json"]
    if not SEMVER.fullmatch(version):
        raise Refused(f"package.json's version {version!r} is not X.Y.Z")
    if len(set(found.values())) != 1:
        raise Refused("the versions disagree: " + ", ".join(f"{where} {v}" for where, v in found.items()))
    return version


def changelog_entry(changelog: str, version: str) -> str:
    """The CHANGELOG's entry for `version`: its heading and lines up to the next entry."""
    entries = list(ENTRY.finditer(changelog))
    for i, entry in enumerate(entries):
        if entry["version"] == version:
            end = entries[i + 1].start() if i + 1 < len(entries) else len(changelog)
            return changelog[entry.start():end].strip()
    return ""


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)


def committed(repo: Path) -> Callable[[str], str]:
    """A reader of the package's files as HEAD holds them (what the tag will mark)."""
    def read(path: str) -> str:
        shown = git(repo, "show", f"HEAD:{PACKAGE}/{path}")
        if shown.returncode != 0:
            raise Refused(f"{PACKAGE}/{path} is not committed at HEAD: {shown.stderr.strip()}")
        return shown.stdout
    return read


def in_tree(repo: Path) -> Callable[[str], str]:
    """A reader of the package's files as the working tree holds them."""
    return lambda path: (repo / PACKAGE / path).read_text()


def release(repo: Path) -> str:
    """Check, then create the annotated tag `unity-v<version>` on HEAD; the tag's name (or Refused)."""
    top = git(repo, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise Refused(f"{repo} is not a git work tree: {top.stderr.strip()}")
    dirty = git(repo, "status", "--porcelain", "--untracked-files=normal").stdout.splitlines()
    if dirty:
        shown = "; ".join(line.strip() for line in dirty[:10]) + ("; ..." if len(dirty) > 10 else "")
        raise Refused(f"the working tree is not clean ({len(dirty)} changes: {shown}): commit or remove them first, "
                      "so the tag marks exactly what was checked")
    version = agreed(versions(committed(repo)))
    tag = TAG_PREFIX + version
    existing = git(repo, "rev-parse", "-q", "--verify", f"refs/tags/{tag}^{{commit}}")
    if existing.returncode == 0:
        raise Refused(f"the tag {tag} already exists (on {existing.stdout.strip()[:12]}): a released version never "
                      "moves; bump package.json's version, the CHANGELOG and Runtime/AssemblyInfo.cs for a new one")
    entry = changelog_entry(committed(repo)("CHANGELOG.md"), version)
    message = f"com.gaia.realtime {version} ({PACKAGE})\n\n{entry}\n"
    made = git(repo, "tag", "-a", "--cleanup=verbatim", tag, "-m", message)  # verbatim: keep the `## ` heading
    if made.returncode != 0:
        raise Refused(f"git tag {tag} failed: {made.stderr.strip()}")
    return tag


def main(argv: list[str] | None = None) -> int:
    """Tag the release (exit 0), or say why not (exit 1); `--check` only checks the working tree's versions agree."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="make unity-release", description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=ROOT, help="the repository (default: this checkout)")
    parser.add_argument("--check", action="store_true", help="only check that the versions agree (working tree)")
    args = parser.parse_args(argv)
    try:
        if args.check:
            log.info("com.gaia.realtime %s: package.json, CHANGELOG.md and AssemblyInfo.cs agree",
                     agreed(versions(in_tree(args.repo))))
            return 0
        tag = release(args.repo)
    except Refused as why:
        log.error("unity-release refused: %s", why)
        return 1
    head = git(args.repo, "rev-parse", "HEAD").stdout.strip()
    log.info("tagged %s on %s (annotated). Publish it: git push origin %s", tag, head[:12], tag)
    log.info("games then install: <git URL of this repository>?path=/%s#%s", PACKAGE, tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
