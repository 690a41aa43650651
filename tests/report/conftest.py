"""The quick demo, run once per session for the slow report tests (numbers, browser)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory):
    from mechscope.report import run_demo

    out = tmp_path_factory.mktemp("demo") / "report.html"
    result = run_demo(out, quick=True)
    assert not result.failed, [(s.key, s.error) for s in result.failed]
    return result
