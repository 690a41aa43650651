"""Sweep fixtures: a fast toy kind for the runner's mechanics, configs on disk, and a local Ray
cluster of 2 CPUs that only these tests use (its own port, temp dir and auth token)."""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from mechscope.models import Placement
from mechscope.sweep import KINDS, Kind


@dataclass
class ToyParams:
    """A toy kind: value = 2x (+ seeded noise); fail=True raises inside the trial."""

    x: float = 1.0
    label: str = "a"
    seed: int = 0
    fail: bool = False


CALLS: list[dict[str, Any]] = []


def run_toy(p: ToyParams, folder: Path, placement: Placement) -> dict[str, Any]:
    CALLS.append({"x": p.x, "label": p.label, "seed": p.seed, "placement": placement})
    if p.fail:
        raise RuntimeError(f"toy trial x={p.x} failed on purpose")
    (folder / "artifact.txt").write_text(f"{p.x} {p.label}\n")
    return {"value": 2 * p.x, "noise": float(torch.rand(())), "threads": torch.get_num_threads()}


@pytest.fixture
def toy(monkeypatch):
    """Register the toy kind; yields the list of its calls (parameters of each trial run)."""
    monkeypatch.setitem(KINDS, "toy", Kind(ToyParams, run_toy, ("value", "noise")))
    CALLS.clear()
    yield CALLS
    CALLS.clear()


@pytest.fixture
def write_config(tmp_path):
    """write_config(dict, name="sweep.yaml") -> the path of that config written as YAML."""

    def write(d: dict[str, Any], name: str = "sweep.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(d, sort_keys=False))
        return path

    return write


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the test process dies (Linux), so no cluster outlives it."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@pytest.fixture(scope="session")
def ray_cluster():
    """(address, env): a Ray head with 2 CPUs addressed as 127.0.0.1 (`ray start --head --block`
    in a subprocess, a port and temp dir of its own), and the environment a driver needs to
    attach to it. Ray 2.60 listens on every interface whatever --node-ip-address says, so the
    cluster requires a token of its own (RAY_AUTH_MODE=token). Teardown stops this cluster
    only: SIGTERM to its `ray start` (which stops the processes it started), then SIGKILL to
    whatever is left in its process group."""
    if importlib.util.find_spec("ray") is None:
        pytest.fail('Ray is missing: pip install "mechscope[distributed]" (CI installs it)')
    temp = Path(tempfile.mkdtemp(prefix="msray-", dir="/tmp"))  # short: Ray's socket paths
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    env.pop("RAY_ADDRESS", None)
    log = temp / "head.log"
    cmd = [
        str(Path(sys.executable).with_name("ray")),
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        "--num-cpus=2",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--temp-dir={temp}",
    ]
    with log.open("w") as f:
        proc = subprocess.Popen(
            cmd,
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`ray start` did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}", env
    finally:
        _stop(proc)
        shutil.rmtree(temp, ignore_errors=True)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM `ray start --block` (it stops its cluster), wait up to a minute, then SIGKILL any
    process left in its group. The leader is not reaped before that (WNOWAIT), so its id, the
    group's, cannot have gone to another process."""
    proc.terminate()
    deadline = time.monotonic() + 60
    flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
    while os.waitid(os.P_PID, proc.pid, flags) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
