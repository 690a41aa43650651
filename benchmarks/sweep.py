"""`mechscope sweep` speed: the same CPU-bound sweep run serially and on Ray workers.

    python benchmarks/sweep.py [--n 24] [--workers 2]

8 ACDC trials on the bundled code-attn4 (docstring prompts, resample ablation, KL; 4 thresholds x
2 prompt seeds), by the command line in fresh processes: `--backend serial`; `--backend ray
--workers N` (an embedded Ray started by the command); and, as the machine's own ceiling without
Ray, N serial commands side by side, each on 1/N of the trials. All use one torch thread per
trial, so the only difference is how many trials run at once. Wall times include everything a
command does: imports, model loading (once per process), Ray's start-up. The script checks that
the runs give the same results.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

CONFIG = {
    "kind": "acdc",
    "threads": 1,
    "fixed": {"model": "code-attn4", "task": "docstring", "ablation": "resample"},
    "grid": {"tau": [0.005, 0.01, 0.02, 0.05], "seed": [0, 1]},
}


def _cmd(config: Path, out: Path, *args: str) -> list[str]:
    """`mechscope sweep config --out out *args` in a fresh Python process."""
    cli = [sys.executable, "-m", "mechscope.cli", "sweep", str(config), "--out", str(out)]
    return [*cli, "--no-progress", *args]


def _wall(*cmds: list[str]) -> float:
    """Wall seconds of the commands run side by side."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in cmds]
    for proc, cmd in zip(procs, cmds, strict=True):
        _, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{err.decode()}")
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=24, help="prompts per trial")
    p.add_argument("--workers", type=int, default=2, help="Ray workers (trials at once)")
    args = p.parse_args()
    k = args.workers
    taus = CONFIG["grid"]["tau"]
    CONFIG["fixed"]["n"] = args.n
    print(
        f"8 ACDC trials: code-attn4, docstring x {args.n} prompts, taus {taus} x seeds [0, 1]; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} before the runs"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        def config(name: str, tau: list[float]) -> Path:
            path = root / f"{name}.yaml"
            cfg = {**CONFIG, "grid": {**CONFIG["grid"], "tau": tau}}
            path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            return path

        full = config("all", taus)
        parts = [config(f"part{i}", taus[i::k]) for i in range(k) if taus[i::k]]
        runs = {
            "serial": _wall(_cmd(full, root / "serial", "--backend", "serial")),
            f"{len(parts)} serial processes (no Ray)": _wall(
                *(_cmd(c, root / f"split-{c.stem}", "--backend", "serial") for c in parts)
            ),
            f"ray, {k} workers": _wall(
                _cmd(full, root / "ray", "--backend", "ray", "--workers", str(k))
            ),
        }
        tables = {}
        for name, pattern in zip(runs, ["serial", "split-*", "ray"], strict=True):
            t = pd.concat(pd.read_parquet(f) for f in root.glob(f"{pattern}/results.parquet"))
            tables[name] = t.sort_values("key").reset_index(drop=True)
    cols = ["key", "n_edges", "faithfulness", "value"]
    base = tables["serial"]
    same = all(t[cols].equals(base[cols]) for t in tables.values())
    at_once = [1, len(parts), k]
    print(
        f"{'mode':<28} {'trials at once':>14} {'torch threads/trial':>20} {'wall s':>7} "
        f"{'sum of trial s':>15} {'speed-up':>9}"
    )
    for (name, wall), n in zip(runs.items(), at_once, strict=True):
        print(
            f"{name:<28} {n:>14} {1:>20} {wall:>7.1f} {tables[name]['seconds'].sum():>15.1f} "
            f"{runs['serial'] / wall:>8.2f}x"
        )
    print(
        f"same results in every mode: {same}. Wall: the whole command(s), imports, model "
        "loading and Ray's start-up included; sum of trial s: the trials' own seconds (a "
        "process's first trial includes loading the model)."
    )


if __name__ == "__main__":
    main()
