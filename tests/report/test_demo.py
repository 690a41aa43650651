"""run_demo: a failing stage gives a partial report while the other stages still run."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from mechscope.report import demo as D
from mechscope.report import sections as S
from mechscope.report.cli import demo_command
from mechscope.report.sections import Section


def _fake(key: str, calls: list[str], fail: bool = False):
    def run(cfg, files) -> Section:
        calls.append(key)
        if fail:
            raise RuntimeError(f"boom in {key}")
        return Section(key, key.title(), f"{key}?", [f"mechscope {key}"], finding=f"{key} ok")

    meta = (key, key.title(), f"{key}?")
    return (meta, lambda cfg: [f"mechscope {key}"], run)


def _stages(monkeypatch, failing: str) -> list[str]:
    calls: list[str] = []
    stages = {k: _fake(k, calls, fail=k == failing) for k in ("a", "b", "c")}
    monkeypatch.setattr(S, "STAGES", stages)
    return calls


def test_failing_stage_gives_partial_report(monkeypatch, tmp_path) -> None:
    calls = _stages(monkeypatch, failing="b")
    result = D.run_demo(tmp_path / "r.html", quick=True)
    assert calls == ["a", "b", "c"]  # the stage after the failing one still ran
    assert [s.key for s in result.failed] == ["b"]
    assert result.failed[0].error == "RuntimeError: boom in b"
    page = result.html.read_text()
    assert "a ok" in page and "c ok" in page
    assert "failed:</b> RuntimeError: boom in b" in page
    assert "mechscope b" in page  # the rerun command of the failed stage is still there
    data = json.loads(result.json.read_text())
    assert data["sections"]["b"]["ok"] is False
    assert data["sections"]["c"]["finding"] == "c ok"
    assert all(s["seconds"] >= 0 for s in data["sections"].values())


def test_report_written_after_each_stage(monkeypatch, tmp_path) -> None:
    """Nothing computed is lost: after stage a the file already holds it."""
    seen: list[str] = []
    calls: list[str] = []
    stages = {k: _fake(k, calls) for k in ("a", "b")}
    meta, cmds, run_b = stages["b"]

    def b_reads_report(cfg, files):
        seen.append((tmp_path / "r.html").read_text())
        return run_b(cfg, files)

    stages["b"] = (meta, cmds, b_reads_report)
    monkeypatch.setattr(S, "STAGES", stages)
    D.run_demo(tmp_path / "r.html", quick=True)
    assert "a ok" in seen[0] and "b ok" not in seen[0]


def test_a_real_stage_fails_cleanly_and_the_next_runs(monkeypatch, tmp_path) -> None:
    """The real patching stage breaks (e.g. a missing model); the real SAE stage still runs."""

    def broken(cfg, files):
        from mechscope import load_model

        load_model("no-such-model")

    meta, cmds, _ = S.STAGES["patching"]
    monkeypatch.setitem(S.STAGES, "patching", (meta, cmds, broken))
    app = typer.Typer()
    app.command()(demo_command)
    out = tmp_path / "r.html"
    res = CliRunner().invoke(
        app, ["--quick", "--out", str(out), "--only", "patching", "--only", "saes"]
    )
    assert res.exit_code == 1, res.output
    assert "failed" in res.output and "ModelLoadError" in res.output
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["sections"]["patching"]["ok"] is False
    assert "no-such-model" in data["sections"]["patching"]["error"]
    assert data["sections"]["saes"]["ok"] is True
    assert data["sections"]["saes"]["numbers"]  # the bundled SAEs' evaluations
    assert data["sections"]["patching"]["commands"][0].startswith("mechscope patch")


def test_unknown_stage_is_refused(tmp_path) -> None:
    app = typer.Typer()
    app.command()(demo_command)
    res = CliRunner().invoke(app, ["--only", "nope", "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 2
    assert "unknown stage" in res.output
    assert not (tmp_path / "r.html").exists()
