"""Browser tests without chromium: skipped with the reason in a plain run, failed where CI is set
(.ci/run exports CI=true and installs chromium, so a skip there would hide a broken set-up)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import browser_unavailable

REASON = "chromium not found: install it with `apt-get install chromium`"


@pytest.mark.parametrize("ci", [None, "", "0", "false"])
def test_skips_with_the_reason_outside_ci(monkeypatch, ci) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="chromium not found"):
        browser_unavailable(REASON)


@pytest.mark.parametrize("ci", ["true", "1", "TRUE", "yes"])
def test_fails_in_ci(monkeypatch, ci) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match=r"chromium not found.*CI is set"):
        browser_unavailable(REASON)


def test_the_ci_script_sets_ci() -> None:
    script = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    assert "CI=true" in script.split("pytest -q")[0]  # exported before the tests run
