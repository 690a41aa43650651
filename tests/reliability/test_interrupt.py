"""SIGINT and SIGKILL in the middle of the commands that resume (`sae train`, `sweep`,
`evolution run --checkpoint`): the interrupted run leaves only whole files, and rerunning the
same command finishes with the result an uninterrupted run gives, byte for byte."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

TIMEOUT = 600  # seconds; the machine may be shared


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log.open("w") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "mechscope.cli", *args],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
        )


def _wait_for(proc: subprocess.Popen, ready: Callable[[], bool], log: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not ready():
        assert proc.poll() is None, f"ended before the interruption: {log.read_text()}"
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


def _interrupt(proc: subprocess.Popen, sig: int, log: Path) -> str:
    proc.send_signal(sig)
    rc = proc.wait(timeout=TIMEOUT)
    out = log.read_text()
    assert rc == (130 if sig == signal.SIGINT else -sig), out
    assert "Traceback" not in out, out
    return out


def _finish(args: list[str], log: Path) -> None:
    proc = _start(args, log)
    assert proc.wait(timeout=TIMEOUT) == 0, log.read_text()


SAE = [
    *["sae", "train", "--model", "code-2l", "--hook", "blocks.0.hook_resid_post"],
    *["--steps", "1500", "--checkpoint-every", "50", "--batch-size", "2", "--expansion", "1"],
    *["--eval-batches", "1"],
]
RUN = "blocks.0.hook_resid_post__local__l1-3"


@pytest.mark.slow
def test_sae_train_interrupted_then_resumed(tmp_path, mechscope_cli, leftovers) -> None:
    ref = mechscope_cli([*SAE, "--out", tmp_path / "ref"])
    assert ref.exit_code == 0, ref.output
    out, log = tmp_path / "out", tmp_path / "log"
    ckpt = out / "_checkpoints" / RUN / "checkpoint.pt"
    args = [*SAE, "--out", str(out)]

    proc = _start(args, log)
    _wait_for(proc, ckpt.exists, log)
    assert "Error: interrupted; every file written so far is whole" in _interrupt(
        proc, signal.SIGINT, log
    )
    first = ckpt.stat().st_mtime_ns
    proc = _start(args, log)  # resumes, then is killed past a later checkpoint
    _wait_for(proc, lambda: ckpt.stat().st_mtime_ns != first, log)
    _interrupt(proc, signal.SIGKILL, log)
    assert not (out / RUN).exists(), "killed after training ended: give it more steps"
    assert not leftovers(out)
    _finish(args, log)
    for f in ("sae_weights.safetensors",):
        assert (out / RUN / f).read_bytes() == (tmp_path / "ref" / RUN / f).read_bytes()
    history = json.loads((out / RUN / "cfg.json").read_text())["metadata"]["evaluation"]
    reference = json.loads((tmp_path / "ref" / RUN / "cfg.json").read_text())
    # the same weights; the evaluation's float sums may differ in the last bit between processes
    want = reference["metadata"]["evaluation"]
    assert history.keys() == want.keys()
    for k, v in want.items():
        assert history[k] == (pytest.approx(v, rel=1e-12) if isinstance(v, float) else v), k


SWEEP = """kind: acdc
threads: 1
fixed: {model: code-attn4, n: 4, metric: kl}
grid:
  tau: [0.01, 0.02, 0.05, 0.1]
"""


def _trial_results(out: Path) -> dict[str, dict]:
    found = {}
    for p in sorted((out / "trials").glob("*/result.json")):
        r = json.loads(p.read_text())
        found[r["key"]] = {"status": r["status"], "results": r["results"]}
    return found


@pytest.mark.slow
def test_sweep_interrupted_then_resumed(tmp_path, mechscope_cli, leftovers) -> None:
    config = tmp_path / "acdc.yaml"
    config.write_text(SWEEP)
    ref = mechscope_cli(["sweep", config, "--backend", "serial", "--out", tmp_path / "ref"])
    assert ref.exit_code == 0, ref.output
    out, log = tmp_path / "out", tmp_path / "log"
    args = ["sweep", str(config), "--backend", "serial", "--out", str(out), "--no-progress"]

    proc = _start(args, log)
    _wait_for(proc, lambda: len(_trial_results(out)) >= 1, log)
    assert "Error: interrupted" in _interrupt(proc, signal.SIGINT, log)
    proc = _start(args, log)
    _wait_for(proc, lambda: len(_trial_results(out)) >= 2, log)
    _interrupt(proc, signal.SIGKILL, log)
    assert len(_trial_results(out)) < 4, "killed after the sweep ended"
    assert not leftovers(out)
    _finish(args, log)
    assert _trial_results(out) == _trial_results(tmp_path / "ref")
    assert "skipped" in log.read_text()


EVOLUTION = [
    *["evolution", "run", "--model", "code-2l", "--batches", "200", "--batch-size", "2"],
    *["--checkpoint-every", "5", "--no-graph"],
]


def _without_meta(folder: Path) -> dict:
    """evolution.json less its meta (timings; a resumed run records where it went on from)."""
    doc = json.loads((folder / "evolution.json").read_text())
    del doc["meta"]
    return doc


@pytest.mark.slow
def test_evolution_run_interrupted_then_resumed(tmp_path, mechscope_cli, leftovers) -> None:
    ref = mechscope_cli([*EVOLUTION, "--out", tmp_path / "ref"])
    assert ref.exit_code == 0, ref.output
    out, ck, log = tmp_path / "out", tmp_path / "ck", tmp_path / "log"
    state = ck / "state.safetensors"
    args = [*EVOLUTION, "--checkpoint", str(ck), "--out", str(out)]

    proc = _start(args, log)
    _wait_for(proc, state.exists, log)
    assert "Error: interrupted; every file written so far is whole" in _interrupt(
        proc, signal.SIGINT, log
    )
    first = state.stat().st_mtime_ns
    proc = _start(args, log)  # resumes, then is killed past a later checkpoint
    _wait_for(proc, lambda: state.stat().st_mtime_ns != first, log)
    _interrupt(proc, signal.SIGKILL, log)
    assert not out.exists(), "killed after the run ended: give it more batches"
    assert not leftovers(ck)
    _finish(args, log)
    assert "resumed_from" in json.loads((out / "evolution.json").read_text())["meta"]
    for f in ("tensors.safetensors",):
        assert (out / f).read_bytes() == (tmp_path / "ref" / f).read_bytes()
    assert _without_meta(out) == _without_meta(tmp_path / "ref")
