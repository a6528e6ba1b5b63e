"""A tool `make test` installs that is missing: skipped on a developer's machine, a failure under CI=true."""
from __future__ import annotations

import pytest

from tests.helpers import missing_tool


def test_a_missing_tool_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tests.helpers.UNDER_CI", False)
    with pytest.raises(pytest.skip.Exception):
        missing_tool("chromium is not installed")


def test_a_missing_tool_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tests.helpers.UNDER_CI", True)
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        missing_tool("chromium is not installed")
