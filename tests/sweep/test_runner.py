"""The serial runner on a toy kind: results on disk, resume, failures, atomic writes, the merged
table and figure, the fallback without Ray, and the command line."""

from __future__ import annotations

import io
import json
import os
import sys
from dataclasses import replace

import pandas as pd
import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from mechscope.cli import app
from mechscope.errors import OutputError
from mechscope.sweep import KINDS, SweepConfig, SweepError, SweepReport, TrialResult, run_sweep
from mechscope.sweep.results import summary_figure

GRID = {"kind": "toy", "fixed": {"seed": 1}, "grid": {"x": [0.1, 1.0, 10.0], "label": ["a", "b"]}}


def run(cfg, out, **kw):
    return run_sweep(
        cfg, out, backend="serial", progress=False, console=Console(file=io.StringIO()), **kw
    )


def test_serial_sweep_writes_results_table_and_figure(toy, tmp_path):
    cfg = SweepConfig.from_dict(GRID)
    threads = torch.get_num_threads()
    report = run(cfg, tmp_path, threads=1)
    keys = [t.key for t in cfg.trials()]
    assert report.ran == keys and not report.skipped and not report.failed
    assert torch.get_num_threads() == threads  # the trial's thread count is restored
    for t in cfg.trials():
        r = TrialResult.load(tmp_path / "trials" / t.key / "result.json")
        assert r.ok and r.params == t.params and r.results["value"] == 2 * t.params["x"]
        assert r.results["threads"] == 1 and r.pid == os.getpid()
        assert (tmp_path / "trials" / t.key / "artifact.txt").exists()
        assert not (tmp_path / "trials" / t.key / "running").exists()
    # the same seed gives the same noise, whatever ran before in the process
    assert len({r for r in pd.read_csv(tmp_path / "results.csv")["noise"]}) == 1
    table = pd.read_parquet(tmp_path / "results.parquet")
    assert list(table["key"]) == keys and (table["status"] == "ok").all()
    assert {"x", "label", "seed", "value", "noise", "seconds"} <= set(table.columns)
    assert pd.read_csv(tmp_path / "results.csv")["value"].tolist() == table["value"].tolist()
    assert SweepReport.load(tmp_path).ran == keys == report.ran
    assert json.loads((tmp_path / "sweep.json").read_text())["grid"] == cfg.grid
    html = (tmp_path / "summary.html").read_text()
    assert "plotly" in html and "label=a" in html
    fig = summary_figure(cfg, table)
    assert len(fig.data) == 4  # 2 metrics x 2 labels
    assert fig.layout.xaxis.type == "log"  # x spans two decades


def test_rerun_skips_finished_trials_and_resumes_after_a_crash(toy, tmp_path, monkeypatch):
    cfg = SweepConfig.from_dict(GRID)
    keys = [t.key for t in cfg.trials()]
    kind = KINDS["toy"]

    def crash_on_third(p, folder, placement):
        if len(toy) == 2:
            raise KeyboardInterrupt  # the sweep process dies in the third trial
        return kind.run(p, folder, placement)

    monkeypatch.setitem(KINDS, "toy", replace(kind, run=crash_on_third))
    with pytest.raises(KeyboardInterrupt):
        run(cfg, tmp_path)
    assert sorted(p.parent.name for p in tmp_path.glob("trials/*/result.json")) == sorted(keys[:2])
    monkeypatch.setitem(KINDS, "toy", kind)
    toy.clear()
    report = run(cfg, tmp_path)
    assert report.skipped == keys[:2] and report.ran == keys[2:]
    assert [c["x"] for c in toy] == [t.params["x"] for t in cfg.trials()[2:]]
    toy.clear()
    report = run(cfg, tmp_path)
    assert report.ran == [] and report.skipped == keys and toy == []


def test_failed_trial_is_recorded_others_go_on_and_rerun_retries_it(toy, tmp_path):
    cfg = SweepConfig.from_dict({"kind": "toy", "grid": {"x": [1, 2, 3], "fail": [False]}})
    bad = SweepConfig.from_dict({"kind": "toy", "grid": {"x": [1, 2, 3], "fail": [True]}})
    # a failing trial: one with fail=True, same x as the second trial of `cfg` otherwise
    trials = [*cfg.trials()[:1], bad.trials()[1], *cfg.trials()[2:]]
    mixed = SweepConfig.from_dict({"kind": "toy", "grid": {"x": [1]}})
    mixed.trials = lambda: trials  # type: ignore[method-assign]
    report = run(mixed, tmp_path)
    failed = trials[1].key
    assert report.ran == [trials[0].key, trials[2].key]
    assert list(report.failed) == [failed]
    assert "RuntimeError: toy trial x=2.0 failed on purpose" in report.failed[failed]
    folder = tmp_path / "trials" / failed
    saved = TrialResult.load(folder / "result.json")
    assert saved.status == "failed" and saved.results == {} and "Traceback" in saved.error
    assert sorted(p.name for p in folder.iterdir()) == ["result.json"]  # no marker, no tmp
    table = pd.read_csv(tmp_path / "results.csv")
    assert table["status"].tolist() == ["ok", "failed", "ok"]
    assert table["error"][1] == "RuntimeError: toy trial x=2.0 failed on purpose"
    toy.clear()
    report = run(mixed, tmp_path)  # failed trials are not finished: tried again
    assert report.ran == [] and list(report.failed) == [failed] and len(toy) == 1


def test_result_writes_are_atomic(toy, tmp_path, monkeypatch):
    cfg = SweepConfig.from_dict({"kind": "toy", "grid": {"x": [1, 2]}})
    first, second = cfg.trials()
    run(cfg, tmp_path)
    before = (tmp_path / "trials" / first.key / "result.json").read_bytes()
    (tmp_path / "trials" / second.key / "result.json").unlink()

    def broken_replace(src, dst):
        raise OSError("disk full")

    real_replace = os.replace
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OutputError, match="disk full"):  # the OSError, naming the file
        run(cfg, tmp_path)
    monkeypatch.setattr(os, "replace", real_replace)
    for t in (first, second):  # no temporary files left, no partial result
        names = sorted(p.name for p in (tmp_path / "trials" / t.key).iterdir())
        assert names == (["artifact.txt", "result.json"] if t is first else ["artifact.txt"])
    assert (tmp_path / "trials" / first.key / "result.json").read_bytes() == before
    report = run(cfg, tmp_path)
    assert report.ran == [second.key] and report.skipped == [first.key]


def test_auto_falls_back_to_serial_without_ray(toy, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    cfg = SweepConfig.from_dict({"kind": "toy", "grid": {"x": [1, 2]}})
    text = io.StringIO()
    report = run_sweep(cfg, tmp_path, progress=False, console=Console(file=text, width=200))
    assert report.backend == "serial" and len(report.ran) == 2
    assert 'Ray is not installed: running the trials serially (pip install "mechscope' in (
        text.getvalue()
    )
    with pytest.raises(SweepError, match=r'pip install "mechscope\[distributed\]"'):
        run_sweep(cfg, tmp_path / "b", backend="ray", progress=False)
    with pytest.raises(SweepError, match="needs Ray"):
        run_sweep(cfg, tmp_path / "b", address="127.0.0.1:1", progress=False)


def test_bad_run_arguments(toy, tmp_path):
    cfg = SweepConfig.from_dict({"kind": "toy", "grid": {"x": [1]}})
    with pytest.raises(SweepError, match="no output folder; set `out` in it or pass --out"):
        run_sweep(cfg, progress=False)
    with pytest.raises(SweepError, match="unknown backend 'dask'"):
        run_sweep(cfg, tmp_path, backend="dask", progress=False)
    with pytest.raises(SweepError, match="--address attaches to a Ray cluster"):
        run_sweep(cfg, tmp_path, backend="serial", address="127.0.0.1:1", progress=False)
    with pytest.raises(SweepError, match=r"no Ray cluster answers at 127\.0\.0\.1:1"):
        run_sweep(cfg, tmp_path, address="127.0.0.1:1", progress=False)  # at once, not minutes


def test_cli_reports_failures_and_config_errors(toy, write_config, tmp_path):
    cli = CliRunner()
    path = write_config({"kind": "toy", "out": str(tmp_path / "o"), "grid": {"x": [1, 2]}})
    r = cli.invoke(app, ["sweep", str(path), "--backend", "serial", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "2 to run serially" in r.output and "summary.html" in r.output
    r = cli.invoke(app, ["sweep", str(path), "--backend", "serial", "--no-progress"])
    assert r.exit_code == 0 and "2 finished earlier, 0 to run" in " ".join(r.output.split())
    path = write_config({"kind": "toy", "grid": {"x": [1, 2], "fail": [True]}}, "f.yaml")
    r = cli.invoke(app, ["sweep", str(path), "--out", str(tmp_path / "f"), "--backend", "serial"])
    text = " ".join(r.output.split())
    assert r.exit_code == 1 and "2 trials failed; rerun to retry" in text
    assert "RuntimeError: toy trial x=2.0 failed on purpose" in text
    path = write_config({"kind": "toy", "grid": {"y": [1]}}, "e.yaml")
    r = cli.invoke(app, ["sweep", str(path), "--out", str(tmp_path / "e")])
    assert r.exit_code == 2 and "toy has no parameter 'y'" in " ".join(r.output.split())


def test_every_trial_gets_the_placement_of_the_config_or_of_the_command(
    toy, tmp_path, write_config
):
    from mechscope.models import Placement

    d = {**GRID, "placement": {"device": "cpu", "dtype": "bfloat16"}}
    cfg = SweepConfig.from_dict(d)
    assert cfg.placement == Placement("cpu", None, "bfloat16")
    assert SweepConfig.from_dict(cfg.to_dict()) == cfg
    run(cfg, tmp_path / "a")
    assert [c["placement"] for c in toy] == [cfg.placement] * 6
    toy.clear()
    run(cfg, tmp_path / "b", placement=Placement(device_map="cpu"))
    assert [c["placement"] for c in toy] == [Placement(device_map="cpu")] * 6
    written = json.loads((tmp_path / "b" / "sweep.json").read_text())
    assert written["placement"] == {"device_map": "cpu"}  # the placement the trials ran with
    toy.clear()  # the command's options replace the config's placement
    path = write_config({**d, "grid": {"x": [1.0]}, "out": str(tmp_path / "c")})
    r = CliRunner().invoke(app, ["sweep", str(path), "--backend", "serial", "--dtype", "float16"])
    assert r.exit_code == 0, r.output
    assert [c["placement"] for c in toy] == [Placement(dtype="float16")]
    for bad, says in (({"gpu": "0"}, "has no 'gpu'"), ({"device_map": "{x"}, "not valid JSON")):
        with pytest.raises(SweepError, match=says):
            SweepConfig.from_dict({**GRID, "placement": bad})
