"""The fault-injection suite's tools: run a command in-process as `mechscope` runs it, check
that it failed with one line and no traceback, and that nothing was left half-written."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from mechscope.cli import app


@pytest.fixture
def mechscope_cli() -> Callable[[Sequence[str]], Result]:
    """Run `mechscope ARGS` in this process (the root app, its error handling included)."""
    runner = CliRunner()
    return lambda args: runner.invoke(app, [str(a) for a in args])


def temp_leftovers(folder: Path) -> list[Path]:
    """Temporary files of `mechscope.files` (`.NAME.xxxx`) or `*.tmp` left under `folder`."""
    return [p for p in Path(folder).rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]


@pytest.fixture
def failed_cleanly() -> Callable[..., str]:
    """check(result, *fragments, folder=None): a non-zero exit with one `Error:` line holding
    every fragment, no traceback, the exception a clean exit (not an escaped error), and no
    temporary files under `folder`; returns the error line."""

    def check(result: Result, *fragments: str, folder: Path | None = None) -> str:
        out = result.output
        assert result.exit_code not in (0, None), out
        assert isinstance(result.exception, SystemExit), (result.exception, out)
        assert "Traceback" not in out, out
        assert out.count("Error:") == 1, out
        error = out[out.index("Error:") :].strip()  # after any progress bar of the work
        assert "\n" not in error and "\r" not in error, out  # one line, and the last one
        for f in fragments:
            assert f in error, (f, error)
        if folder is not None:
            assert not temp_leftovers(folder), temp_leftovers(folder)
        return error

    return check


@pytest.fixture
def leftovers() -> Callable[[Path], list[Path]]:
    """`temp_leftovers` for tests: temporary files left under a folder."""
    return temp_leftovers
