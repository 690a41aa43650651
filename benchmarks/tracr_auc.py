"""ACDC's edge and node AUC on the tracr presets, per ablation, against the matching truth.

    python benchmarks/tracr_auc.py [--seeds 0 1 2 3 4] [--out out/tracr_auc.json]

For each preset (reverse, proportion) and truth convention (zero; resample; resample with ACDC's
positional shuffle) ACDC sweeps `TRACR_TAUS` with the matching ablation on prompts drawn as ACDC
draws them (one draw per seed), L2 metric; each circuit is one ROC point. Prints a markdown table
(AUC "pessimistic / trapezoid", mean (min-max) over seeds; pessimistic = ACDC's staircase on
the Pareto front, trapezoid = auto-circuit's) with the ACDC paper's numbers beside it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from mechscope.circuits.tracr import TASKS, load_tracr
from mechscope.circuits.tracr_eval import TRACR_TAUS, auc_table, evaluate_tracr

# The ACDC paper's AUCs for ACDC on tracr (L2 metric), ACDC repository
# experiments/results/auc_tables.tex, "pessimistic" rule, edge / node. ACDC has one truth, the
# zero-ablation one, and scores both ablations against it. Its random-ablation circuits
# (experiments/results/plots_data/acdc-tracr-*-l2-False-0.json, 2023-06-14) keep 3 / 6 edges at
# every tau: exactly our "resample" truths.
PAPER = {
    ("reverse", "zero"): "zero: 1.000 / 1.000",
    ("reverse", "resample"): "resample: 0.200 / 0.312",
    ("proportion", "zero"): "zero: 1.000 / 1.000",
    ("proportion", "resample"): "resample: 0.600 / 0.727",
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--out", type=Path, default=None, help="write every row as JSON")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows, t0 = [], time.perf_counter()
    for name in TASKS:
        rows += evaluate_tracr(load_tracr(name), seeds=args.seeds, progress=True)
    print(auc_table(rows, PAPER))
    print(f"\n{len(rows)} sweeps of {len(TRACR_TAUS)} taus in {time.perf_counter() - t0:.0f} s")
    if args.out is not None:
        from mechscope.files import write_json

        write_json(args.out, {"taus": list(TRACR_TAUS), "rows": [r.to_dict() for r in rows]})
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
