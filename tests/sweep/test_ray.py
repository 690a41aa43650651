"""`mechscope sweep --address` on a local 2-CPU Ray cluster: the serial run's results, and a
worker killed mid-sweep costs only its own trial, which the rerun runs (nothing else)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from mechscope.sweep import SweepReport, TrialResult, load_config, run_sweep

pytestmark = pytest.mark.slow

# 8 ACDC trials of about a second each on code-attn4
ACDC = {
    "kind": "acdc",
    "fixed": {"model": "code-attn4", "task": "ioi", "n": 4},
    "grid": {"tau": [0.01, 0.02, 0.03, 0.05], "seed": [0, 1]},
}


def sweep_cmd(config: Path, out: Path, address: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mechscope.cli",
        "sweep",
        str(config),
        "--address",
        address,
        "--out",
        str(out),
        "--no-progress",
    ]


def results(out: Path) -> dict[str, TrialResult]:
    return {p.parent.name: TrialResult.load(p) for p in out.glob("trials/*/result.json")}


def test_ray_cluster_gives_the_serial_results(ray_cluster, write_config, tmp_path):
    address, env = ray_cluster
    config = write_config(ACDC)
    quiet = Console(file=io.StringIO())
    serial = run_sweep(
        load_config(config), tmp_path / "serial", "serial", progress=False, console=quiet
    )
    r = subprocess.run(
        sweep_cmd(config, tmp_path / "ray", address),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    report = SweepReport.load(tmp_path / "ray")
    assert report.backend == "ray" and report.workers == 2
    assert report.ran == serial.ran and len(serial.ran) == 8
    a, b = results(tmp_path / "serial"), results(tmp_path / "ray")
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].params == b[key].params and a[key].results == b[key].results
        assert a[key].threads == b[key].threads == 1
    assert len({r.pid for r in b.values()}) >= 2  # two Ray workers, neither the driver
    assert os.getpid() not in {r.pid for r in b.values()}
    cols = ["key", "status", "tau", "seed", "n_edges", "faithfulness", "value"]
    ta = pd.read_parquet(tmp_path / "serial" / "results.parquet")[cols]
    tb = pd.read_parquet(tmp_path / "ray" / "results.parquet")[cols]
    pd.testing.assert_frame_equal(ta, tb)


def _running_trial(out: Path, proc: subprocess.Popen, timeout: float = 180) -> tuple[str, int]:
    """(key, pid) of the first trial seen running (then loading its model, for seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for marker in out.glob("trials/*/running"):
            with contextlib.suppress(FileNotFoundError):  # that trial has just ended
                return marker.parent.name, json.loads(marker.read_text())["pid"]
        time.sleep(0.02)
    raise AssertionError(f"no trial started (sweep exit code {proc.poll()})")


def test_killed_worker_then_rerun_runs_only_the_missing_trial(ray_cluster, write_config, tmp_path):
    address, env = ray_cluster
    config, out = write_config(ACDC), tmp_path / "out"
    keys = [t.key for t in load_config(config).trials()]
    proc = subprocess.Popen(
        sweep_cmd(config, out, address),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    victim, pid = _running_trial(out, proc)
    assert Path(f"/proc/{pid}/cmdline").read_text().startswith("ray::")  # a worker of ours
    os.kill(pid, signal.SIGKILL)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, output
    assert "1 trials failed; rerun to retry" in " ".join(output.split())
    first = SweepReport.load(out)
    assert list(first.failed) == [victim]
    assert "the Ray worker running it died" in first.failed[victim]
    assert first.ran == [k for k in keys if k != victim]
    assert results(out)[victim].status == "failed"
    before = {k: (out / "trials" / k / "result.json").read_bytes() for k in first.ran}

    rerun = subprocess.run(
        sweep_cmd(config, out, address), env=env, capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    second = SweepReport.load(out)
    assert second.ran == [victim] and second.failed == {} and second.skipped == first.ran
    after = {k: (out / "trials" / k / "result.json").read_bytes() for k in first.ran}
    assert after == before  # finished results untouched
    final = results(out)
    assert sorted(final) == sorted(keys) and all(r.ok for r in final.values())
    assert sorted(p.name for p in (out / "trials").iterdir()) == sorted(keys)
    table = pd.read_csv(out / "results.csv")
    assert table["key"].tolist() == keys and (table["status"] == "ok").all()
