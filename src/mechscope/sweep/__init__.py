"""Sweeps: a grid of method calls (ACDC over tasks x taus x ablations, SAE training over layers x
sparsity, stable regions over checkpoints) run as Ray tasks, or serially without Ray.

>>> from mechscope.sweep import load_config, run_sweep
>>> report = run_sweep(load_config("examples/sweeps/acdc.yaml"), out="runs/acdc-sweep")
>>> report.ran, report.skipped, report.failed   # a rerun skips the finished trials

Modules: `config` (the file format, trials and their keys), `kinds` (what a trial calls),
`runner` (serial and Ray backends, resume), `results` (result files, table, figure), `cli`.
"""

from mechscope.sweep.config import SweepConfig, SweepError, Trial, load_config
from mechscope.sweep.kinds import KINDS, Kind
from mechscope.sweep.results import TrialResult, results_table, summary_figure
from mechscope.sweep.runner import SweepReport, run_sweep, run_trial

__all__ = [
    "KINDS",
    "Kind",
    "SweepConfig",
    "SweepError",
    "SweepReport",
    "Trial",
    "TrialResult",
    "load_config",
    "results_table",
    "run_sweep",
    "run_trial",
    "summary_figure",
]
