"""The Unity package's release: one version (package.json, the CHANGELOG, the assembly), install URLs in
docs/unity.md that resolve to the package, and `make unity-release` (tools/unityrelease.py) in a throwaway clone."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import missing_tool
from tools import unityrelease

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clients" / "unity"
DOCS = ROOT / "docs" / "unity.md"
# What docs/unity.md writes where a reader puts their own: this repository's clone URL, a clone on disk, a commit.
REPOSITORY_PLACEHOLDERS = ("https://<host>/<org>/<repo>.git", "file:///home/you/gaia")
COMMIT_PLACEHOLDER = "<commit>"
IDENTITY = {"GIT_AUTHOR_NAME": "release test", "GIT_AUTHOR_EMAIL": "release-test@example.invalid",
            "GIT_COMMITTER_NAME": "release test", "GIT_COMMITTER_EMAIL": "release-test@example.invalid"}


def version() -> str:
    return str(json.loads((PACKAGE / "package.json").read_text())["version"])


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          env={**os.environ, **IDENTITY})
    assert done.returncode == 0 or not check, f"git {' '.join(args)}: {done.stderr}"
    return done


@pytest.fixture
def need_git() -> None:
    if shutil.which("git") is None:
        missing_tool("git is not installed")


def code_blocks(text: str) -> list[tuple[str, str]]:
    """The fenced code blocks of a Markdown text: (info string, body)."""
    blocks, info, body = [], None, []
    for line in text.splitlines():
        if line.startswith("```"):
            if info is None:
                info, body = line[3:].strip(), []
            else:
                blocks.append((info, "\n".join(body)))
                info = None
        elif info is not None:
            body.append(line)
    return blocks


def install_urls() -> list[str]:
    """Every install URL docs/unity.md gives: its manifest.json values (JSON blocks and inline), and the lines of its
    plain code blocks (what goes into *Add package from git URL*)."""
    urls = []
    for info, body in code_blocks(DOCS.read_text()):
        if info == "json":
            urls += re.findall(r'"com\.gaia\.realtime":\s*"([^"]+)"', body)
        elif info == "":
            urls += [line.strip() for line in body.splitlines() if "?path=" in line]
    urls += re.findall(r'`"(git\+file://[^"`]+)"`', DOCS.read_text())  # the inline local-git form
    return urls


def test_unity_package_json_changelog_and_assembly_state_one_version() -> None:
    found = unityrelease.versions(unityrelease.in_tree(ROOT))
    assert set(found.values()) == {version()}, found
    info = (PACKAGE / "Runtime" / "AssemblyInfo.cs").read_text()
    assert f'[assembly: AssemblyVersion("{version()}")]' in info
    assert (PACKAGE / "Runtime" / "AssemblyInfo.cs.meta").is_file()
    top = unityrelease.changelog_entry((PACKAGE / "CHANGELOG.md").read_text(), version())
    assert re.match(rf"## {re.escape(version())} - \d{{4}}-\d{{2}}-\d{{2}}\n", top), top[:80]
    assert "### Breaking since 0.1.0" in top and "Migration" in top, "the first tagged release lists what breaks"


def test_unity_docs_give_a_tag_a_commit_a_branch_and_a_folder_to_install_from() -> None:
    urls = install_urls()
    tagged = f"https://<host>/<org>/<repo>.git?path=/clients/unity#unity-v{version()}"
    assert urls.count(tagged) >= 2, f"the release's URL, for the window and for manifest.json: {urls}"
    assert "https://<host>/<org>/<repo>.git?path=/clients/unity#<commit>" in urls, "a form that works before a tag"
    assert "https://<host>/<org>/<repo>.git?path=/clients/unity#main" in urls
    assert "file:../../gaia/clients/unity" in urls, "a clone on disk, relative to the project's Packages/"
    for url in urls:
        if not url.startswith("file:"):
            assert url.index("?path=/clients/unity") < url.index("#"), f"?path= comes before the revision: {url}"
    assert "unity-v<version>" in DOCS.read_text() and "make unity-release" in DOCS.read_text()


def throwaway_clone(work: Path) -> Path:
    """A clone of this repository (named `gaia`, as the docs' `file:` example has it) whose HEAD commits the package,
    the release tool, the Makefile and docs/unity.md as this working tree has them; no unity-v tag of this version."""
    clone = work / "gaia"
    git(ROOT, "clone", "-q", str(ROOT), str(clone))
    shutil.rmtree(clone / "clients" / "unity")
    shutil.copytree(PACKAGE, clone / "clients" / "unity")
    for path in ("tools/unityrelease.py", "Makefile", "docs/unity.md"):
        shutil.copy(ROOT / path, clone / path)
    git(clone, "add", "-A", "clients/unity", "tools/unityrelease.py", "Makefile", "docs/unity.md")
    if git(clone, "diff", "--cached", "--quiet", check=False).returncode:
        git(clone, "commit", "-q", "-m", "the Unity package as the working tree has it")
    git(clone, "tag", "-d", f"unity-v{version()}", check=False)  # once the real one exists: made again here
    return clone


def release(clone: Path) -> subprocess.CompletedProcess[str]:
    """`make unity-release`'s command, run in the clone (its own copy of the tool, its own repository)."""
    return subprocess.run([sys.executable, "-m", "tools.unityrelease"], cwd=clone, capture_output=True, text=True,
                          env={**os.environ, **IDENTITY}, timeout=60)


def test_unity_release_tool_refuses_a_dirty_tree_disagreeing_versions_and_an_existing_tag_and_tags_otherwise(
        need_git: None, tmp_path: Path) -> None:
    recipe = re.search(r"^unity-release:.*\n\t(.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert recipe and recipe[1] == "$(PY) -m tools.unityrelease", "make unity-release runs the tool tested here"
    clone, tag = throwaway_clone(tmp_path), f"unity-v{version()}"

    readme = clone / "clients" / "unity" / "README.md"
    readme.write_text(readme.read_text() + "\na local note\n")
    refused = release(clone)
    assert refused.returncode == 1 and "not clean" in refused.stderr and "clients/unity/README.md" in refused.stderr, \
        refused.stderr
    git(clone, "checkout", "-q", "--", "clients/unity/README.md")
    stray = clone / "clients" / "unity" / "Runtime" / "Stray.cs"
    stray.write_text("// not committed: the tag would not have it\n")
    refused = release(clone)
    assert refused.returncode == 1 and "Stray.cs" in refused.stderr, refused.stderr
    stray.unlink()

    manifest = clone / "clients" / "unity" / "package.json"
    manifest.write_text(manifest.read_text().replace(f'"version": "{version()}"', '"version": "9.9.9"'))
    git(clone, "commit", "-q", "-am", "package.json bumped alone")
    refused = release(clone)
    assert refused.returncode == 1 and "disagree" in refused.stderr, refused.stderr
    assert "package.json 9.9.9" in refused.stderr and f"CHANGELOG.md {version()}" in refused.stderr
    git(clone, "reset", "-q", "--hard", "HEAD~1")
    assert git(clone, "tag", "-l", "unity-v*").stdout.split() == [], "nothing tagged by a refusal"

    made = release(clone)
    assert made.returncode == 0, made.stderr
    assert f"tagged {tag}" in made.stderr and f"git push origin {tag}" in made.stderr
    assert git(clone, "cat-file", "-t", tag).stdout.strip() == "tag", "an annotated tag"
    head = git(clone, "rev-parse", "HEAD").stdout.strip()
    assert git(clone, "rev-parse", f"{tag}^{{commit}}").stdout.strip() == head
    message = git(clone, "tag", "-l", "--format=%(contents)", tag).stdout
    assert f"com.gaia.realtime {version()}" in message and f"## {version()} - " in message, message

    again = release(clone)
    assert again.returncode == 1 and "already exists" in again.stderr, again.stderr
    assert git(clone, "rev-parse", f"{tag}^{{commit}}").stdout.strip() == head, "the tag did not move"


def resolve(url: str, clone: Path, work: Path, project: Path) -> Path:
    """Where the Package Manager would find the package for this manifest value: a `file:` folder relative to the
    project's Packages/, or the git repository cloned and checked out at the revision, then `?path=`."""
    if url.startswith("file:") and not url.startswith("file://"):
        return (project / "Packages" / url[len("file:"):]).resolve()
    url = url.removeprefix("git+")
    for placeholder in REPOSITORY_PLACEHOLDERS:
        url = url.replace(placeholder, clone.as_uri())
    repository, _, rest = url.partition("?path=")
    path, _, revision = rest.partition("#")
    revision = revision.replace(COMMIT_PLACEHOLDER, git(clone, "rev-parse", "HEAD").stdout.strip())
    checkout = work / f"upm-{len(list(work.glob('upm-*')))}"
    git(work, "clone", "-q", "--no-checkout", repository, str(checkout))
    git(checkout, "checkout", "-q", revision)
    return checkout / path.lstrip("/")


def test_unity_every_install_url_in_the_docs_resolves_to_this_package_once_released(
        need_git: None, tmp_path: Path) -> None:
    clone = throwaway_clone(tmp_path)
    project = tmp_path / "MyGame"  # a Unity project beside the clone, as the docs' `file:` example has it
    (project / "Packages").mkdir(parents=True)
    assert release(clone).returncode == 0
    urls = install_urls()
    assert len(urls) >= 6, urls
    for url in urls:
        folder = resolve(url, clone, tmp_path, project)
        manifest = json.loads((folder / "package.json").read_text())
        assert (manifest["name"], manifest["version"]) == ("com.gaia.realtime", version()), url
        assert (folder / "Runtime" / "Gaia.Realtime.asmdef").is_file(), url
