"""`run_sweep`: run a sweep's unfinished trials serially or as Ray tasks, then merge the results.

Each trial runs in `run_trial` (in this process, or in a Ray worker): it marks its folder
`running` (pid, host), seeds torch/numpy/random with the trial's seed, sets the torch thread
count, calls the kind, and returns a `TrialResult`; this process writes it atomically to the
trial's `result.json` as soon as it arrives. A trial counts as finished once that file says "ok",
so a rerun after a crash or a killed worker runs only the rest. A trial that raises, or whose Ray
worker dies, is recorded as "failed" and rerun next time; the other trials go on.

Ray: embedded (`ray.init` on this machine, shut down at the end) unless `address` names a
running cluster; one CPU per torch thread per trial; `retries` reruns of a trial whose worker
died (0: off, so a crash shows up as a failure at once).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mechscope.errors import SweepError
from mechscope.files import check_writable_dir, write_json
from mechscope.models.placement import Placement
from mechscope.sweep.config import SweepConfig, Trial
from mechscope.sweep.kinds import KINDS
from mechscope.sweep.results import (
    TrialResult,
    check_results,
    finished,
    last_line,
    trial_folder,
    write_outputs,
)

BACKENDS = ("auto", "ray", "serial")
INSTALL_RAY = 'pip install "mechscope[distributed]"'


@dataclass
class SweepReport:
    """One run of a sweep: the backend, the trials that ran (status ok), were skipped (finished
    earlier) or failed (key -> last line of the error), the outputs and the wall time."""

    out: Path
    backend: str
    workers: int
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    outputs: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def save(self) -> Path:
        """Write `<out>/report.json` atomically."""
        d = {**asdict(self), "out": str(self.out), "outputs": [str(p) for p in self.outputs]}
        write_json(self.out / "report.json", d)
        return self.out / "report.json"

    @classmethod
    def load(cls, out: str | Path) -> SweepReport:
        """The report of the last run of the sweep in `out`."""
        d = json.loads((Path(out) / "report.json").read_text())
        return cls(**{**d, "out": Path(d["out"]), "outputs": [Path(p) for p in d["outputs"]]})


def run_trial(
    kind: str,
    key: str,
    params: dict[str, Any],
    out: str,
    threads: int,
    placement: Placement | None = None,
) -> TrialResult:
    """Run one trial with `threads` torch threads (in this process or a Ray worker), its model
    loaded with `placement` (default: CPU, float32); exceptions become a failed `TrialResult`.
    Writes `<out>/trials/<key>/running` while it runs."""
    folder = trial_folder(Path(out), key)
    marker = folder / "running"
    host = socket.gethostname()
    t0 = time.perf_counter()
    try:
        write_json(marker, {"pid": os.getpid(), "host": host, "started": _now()})
        spec = KINDS[kind]
        with _torch_threads(threads), _seeded(int(params.get("seed", 0))):
            run = spec.run(spec.params(**params), folder, placement or Placement())
            results = check_results(run)
        status, error = "ok", None
    except Exception:
        status, results, error = "failed", {}, traceback.format_exc()
    finally:
        marker.unlink(missing_ok=True)
    return TrialResult(
        key=key,
        kind=kind,
        params=params,
        status=status,
        results=results,
        error=error,
        seconds=round(time.perf_counter() - t0, 3),
        threads=threads,
        host=host,
        pid=os.getpid(),
        finished=_now(),
    )


def run_sweep(
    config: SweepConfig,
    out: str | Path | None = None,
    backend: str = "auto",
    address: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    retries: int | None = None,
    progress: bool = True,
    console: Console | None = None,
    placement: Placement | None = None,
) -> SweepReport:
    """Run the trials of `config` that have not finished in `out` (default: the config's `out`);
    write their results, the merged table, the summary figure and report.json.

    backend: "ray" (embedded, or the cluster at `address`), "serial", or "auto" (Ray when it is
    installed, else serial with a notice). workers: trials at once on Ray (default: this
    machine's CPUs // threads; on a cluster: as many as it schedules). threads, retries: override
    the config's. placement: where every trial loads its model (default: the config's).
    """
    placement = placement or config.placement
    console = console or Console(stderr=True)
    t0 = time.perf_counter()
    out = Path(out) if out is not None else config.out
    if out is None:
        raise SweepError(f"{config.source}: no output folder; set `out` in it or pass --out")
    check_writable_dir(out)
    threads = config.threads if threads is None else threads
    retries = config.retries if retries is None else retries
    if threads < 1 or retries < 0 or (workers is not None and workers < 1):
        raise SweepError("threads and workers must be >= 1, retries >= 0")
    backend = resolve_backend(backend, address, console)
    trials = config.trials()
    done = {t.key for t in trials if finished(out, t) is not None}
    todo = [t for t in trials if t.key not in done]
    report = SweepReport(out, backend, 1, skipped=[t.key for t in trials if t.key in done])
    write_json(out / "sweep.json", replace(config, placement=placement).to_dict())  # as run
    if backend == "ray" and not address:
        workers = workers or max(1, (os.cpu_count() or 1) // threads)
    with ExitStack() as stack:
        if backend == "ray" and todo:
            report.workers = stack.enter_context(_ray_session(address, workers, threads))
        console.print(
            f"{config.kind} sweep: {len(trials)} trials, {len(done)} finished earlier, "
            f"{len(todo)} to run {'serially' if backend == 'serial' else 'on Ray'} "
            f"({report.workers} at once, {threads} torch thread(s) each); output {out}"
        )
        record = stack.enter_context(_progress_bar(progress, console, config.kind, len(todo)))

        def on_result(result: TrialResult) -> None:
            result.save(out)
            if result.ok:
                report.ran.append(result.key)
            else:
                report.failed[result.key] = last_line(result.error) or "failed"
            record(result.ok)

        if backend == "serial":
            for t in todo:
                on_result(run_trial(config.kind, t.key, t.params, str(out), threads, placement))
        elif todo:
            _run_ray(config.kind, todo, out, workers, threads, retries, placement, on_result)
    order = {t.key: i for i, t in enumerate(trials)}  # trial order, not the order they ended in
    report.ran.sort(key=order.__getitem__)
    report.failed = dict(sorted(report.failed.items(), key=lambda kv: order[kv[0]]))
    report.outputs = write_outputs(config, out)
    report.seconds = round(time.perf_counter() - t0, 3)
    report.save()
    return report


def resolve_backend(backend: str, address: str | None, console: Console) -> str:
    """The backend to use, "ray" or "serial": "auto" falls back to serial (with a notice) when
    Ray is not installed, where "ray" (or an address) raises SweepError."""
    if backend not in BACKENDS:
        raise SweepError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == "serial":
        if address:
            raise SweepError("--address attaches to a Ray cluster: drop it or use --backend ray")
        return "serial"
    try:
        import ray  # noqa: F401
    except ImportError as e:
        if backend == "ray" or address:
            raise SweepError(
                f"the ray backend needs Ray: {INSTALL_RAY} (or run with --backend serial)"
            ) from e
        console.print(f"Ray is not installed: running the trials serially ({INSTALL_RAY} for more)")
        return "serial"
    return "ray"


@contextmanager
def _ray_session(address: str | None, workers: int | None, threads: int) -> Iterator[int]:
    """Ray started here (`workers` x `threads` CPUs) or attached to `address`, shut down or
    detached on exit (unless Ray was running in this process already); yields how many trials
    run at once."""
    import ray

    own = not ray.is_initialized()
    if own:
        common: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
        if address:
            _check_reachable(address)
            init = functools.partial(ray.init, address=address, **common)
        else:
            n_cpus = (workers or 1) * threads
            init = functools.partial(ray.init, num_cpus=n_cpus, include_dashboard=False, **common)
        try:
            init()
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise SweepError(f"cannot start or reach {where}: {e}") from e
    try:
        yield workers or max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
    finally:
        if own:
            ray.shutdown()


def _check_reachable(address: str) -> None:
    """SweepError at once when nothing listens at a host:port address (ray.init would retry for
    minutes); other forms ("auto", "ray://...") are left to Ray."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return
    if not 0 < int(port) <= 65535:
        raise SweepError(f"--address {address}: port {port} is out of range (1-65535)")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise SweepError(
            f"no Ray cluster answers at {address} ({e.strerror or e}); start one with "
            f"`ray start --head --port={port}` there, or drop --address to run Ray on this machine"
        ) from e


def _run_ray(
    kind: str,
    todo: list[Trial],
    out: Path,
    workers: int | None,
    threads: int,
    retries: int,
    placement: Placement,
    on_result: Callable[[TrialResult], None],
) -> None:
    """Run `todo` as tasks of the connected Ray (at most `workers` at once, default all), calling
    on_result as each ends."""
    import ray

    remote = ray.remote(run_trial).options(
        num_cpus=threads, max_retries=retries, retry_exceptions=False
    )
    queue = list(todo)
    pending: dict[Any, Trial] = {}  # Ray object ref -> its trial
    while queue or pending:
        while queue and len(pending) < (workers or len(todo)):
            t = queue.pop(0)
            pending[remote.remote(kind, t.key, t.params, str(out), threads, placement)] = t
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            t = pending.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as e:  # e.g. the worker died: record it, go on
                died = (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError)
                why = "the Ray worker running it died" if isinstance(e, died) else "Ray failed"
                result = _lost(kind, t, threads, f"{e}\n{type(e).__name__}: {why}")
            on_result(result)


def _lost(kind: str, t: Trial, threads: int, error: str) -> TrialResult:
    """A failed result for a trial whose Ray task ended without one."""
    return TrialResult(
        key=t.key,
        kind=kind,
        params=t.params,
        status="failed",
        error=error,
        threads=threads,
        finished=_now(),
    )


@contextmanager
def _progress_bar(
    enabled: bool, console: Console, kind: str, total: int
) -> Iterator[Callable[[bool], None]]:
    """A progress bar over trials; yields record(ok) to call as each trial ends."""
    bar = Progress(
        TextColumn(f"[bold]{kind} trials"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
    )
    task = bar.add_task("trials", total=total, failed=0)

    def record(ok: bool) -> None:
        bar.update(task, advance=1, failed=bar.tasks[task].fields["failed"] + (not ok))

    with bar:
        yield record


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Python's, numpy's and torch's global generators seeded, restored afterwards."""
    py, npy = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
