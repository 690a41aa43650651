"""A sweep's files: one `TrialResult` per trial, merged into a table and a summary figure.

    <out>/sweep.json                    the config as run
    <out>/trials/<key>/result.json      a `TrialResult` (written once the trial is over)
    <out>/trials/<key>/running          while the trial runs: the pid and host running it
    <out>/trials/<key>/...              the trial's artifacts (circuit.json, SAE folder, ...)
    <out>/results.parquet, results.csv  one row per trial: parameters, then results
    <out>/summary.html                  headline metrics against the first grid parameter
    <out>/report.json                   the last run: which trials ran, were skipped, failed
Every file is written atomically (a temporary file, then a rename).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from mechscope.files import atomic_write, write_figure, write_json, write_text
from mechscope.sweep.config import SweepConfig, Trial
from mechscope.sweep.kinds import KINDS

if TYPE_CHECKING:
    import pandas as pd

Scalar = int | float | str | bool | None


def trial_folder(out: Path, key: str) -> Path:
    return out / "trials" / key


@dataclass
class TrialResult:
    """What one trial gave: status "ok" (results: scalar name -> value) or "failed" (error: the
    traceback or the worker's fate); seconds, torch threads, host and process id of the run;
    finished: UTC time, ISO format."""

    key: str
    kind: str
    params: dict[str, Any]
    status: str
    results: dict[str, Scalar] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    threads: int = 1
    host: str = ""
    pid: int = 0
    finished: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def save(self, out: Path) -> Path:
        """Write `<out>/trials/<key>/result.json` atomically."""
        path = trial_folder(out, self.key) / "result.json"
        write_json(path, asdict(self))
        return path

    @classmethod
    def load(cls, path: Path) -> TrialResult:
        return cls(**json.loads(path.read_text()))


def finished(out: Path, trial: Trial) -> TrialResult | None:
    """The trial's saved result if it finished well (status ok, same parameters), else None."""
    path = trial_folder(out, trial.key) / "result.json"
    try:
        r = TrialResult.load(path)
    except (OSError, ValueError, TypeError):
        return None
    return r if r.ok and r.params == trial.params else None


def results_table(config: SweepConfig, out: Path) -> pd.DataFrame:
    """One row per trial of `config` with a result (in trial order): key, status, parameters,
    results, seconds, error."""
    import pandas as pd  # here: the command line starts faster without it

    rows = []
    for trial in config.trials():
        path = trial_folder(out, trial.key) / "result.json"
        if not path.exists():
            continue
        r = TrialResult.load(path)
        params = {k: v if _is_scalar(v) else json.dumps(v) for k, v in r.params.items()}
        rows.append(
            {
                "key": r.key,
                "status": r.status,
                **params,
                **r.results,
                "seconds": r.seconds,
                "error": last_line(r.error),
            }
        )
    return pd.DataFrame(rows)


def summary_figure(config: SweepConfig, table: pd.DataFrame) -> go.Figure:
    """The kind's headline metrics (one panel each) against the first grid parameter, one line
    per combination of the other grid parameters; failed trials are left out."""
    metrics = [m for m in KINDS[config.kind].metrics if m in table.columns]
    names = list(config.grid)
    x_name = names[0] if names else "key"
    others = names[1:]
    fig = make_subplots(rows=max(1, len(metrics)), cols=1, subplot_titles=metrics)
    ok = table[table["status"] == "ok"] if len(table) else table
    groups = (
        [("all", ok)] if not others or not len(ok) else ok.groupby(others, sort=False, dropna=False)
    )
    for i, metric in enumerate(metrics):
        for j, (label, rows) in enumerate(groups):
            labels = label if isinstance(label, tuple) else (label,)
            name = ", ".join(f"{k}={v}" for k, v in zip(others, labels, strict=False)) or metric
            fig.add_trace(
                go.Scatter(
                    x=rows[x_name],
                    y=rows[metric],
                    mode="lines+markers",
                    name=name,
                    legendgroup=name,
                    showlegend=i == 0,
                    line={"color": qualitative.Plotly[j % len(qualitative.Plotly)]},
                ),
                row=i + 1,
                col=1,
            )
    values = config.grid.get(x_name, [])
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(numbers) == len(values) > 1 and min(numbers) > 0 and max(numbers) / min(numbers) >= 10:
        fig.update_xaxes(type="log")
    elif values and len(numbers) < len(values):
        fig.update_xaxes(type="category", categoryorder="array", categoryarray=values)
    fig.update_xaxes(title_text=x_name, row=max(1, len(metrics)), col=1)
    fixed = ", ".join(f"{k}={v}" for k, v in config.fixed.items())
    fig.update_layout(
        title=f"{config.kind} sweep: {len(table)} trials" + (f" ({fixed})" if fixed else ""),
        height=260 * max(1, len(metrics)) + 120,
        template="plotly_white",
    )
    return fig


def write_outputs(config: SweepConfig, out: Path) -> list[Path]:
    """results.parquet, results.csv and summary.html in `out` (the trials of `config` that have
    a result); returns their paths."""
    table = results_table(config, out)
    paths = [out / "results.parquet", out / "results.csv", out / "summary.html"]
    atomic_write(paths[0], lambda tmp: table.to_parquet(tmp, index=False))
    write_text(paths[1], table.to_csv(index=False))
    write_figure(paths[2], summary_figure(config, table))
    return paths


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, int | float | str | bool)


def last_line(text: str | None) -> str | None:
    """The last non-blank line of an error text (the exception itself), or None."""
    if not text:
        return None
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else None


def check_results(results: Any) -> dict[str, Scalar]:
    """`results` if it maps names to scalars (JSON numbers, strings, booleans, null); TypeError
    otherwise (a kind must put anything bigger into an artifact file)."""
    if not isinstance(results, dict):
        raise TypeError(f"a trial must return a dict of scalar results, got {type(results)}")
    for k, v in results.items():
        if not isinstance(k, str) or not _is_scalar(v):
            raise TypeError(f"result {k!r} = {v!r} is not a scalar; write it to a file instead")
    return results
