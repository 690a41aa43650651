"""Benchmark: peak memory of one patching sweep against `validate.patch_bytes`.

Runs `patch_task` (docstring task, denoising) in this process and prints, as one JSON line, the
rise of the resident set's high-water mark over the sweep (Linux: /proc/self/clear_refs resets
it, /proc/self/status reads it), the estimate and their ratio. One sweep per process: run it
once per setting.

    OMP_NUM_THREADS=1 python benchmarks/patch_memory.py code-2l z --n 200 --memory-mb 64
"""

from __future__ import annotations

import argparse
import json

import torch

import mechscope
from mechscope import validate as V
from mechscope.patching.grid import patch_task
from mechscope.tasks import make_task


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        return 1024 * int(next(line for line in f if line.startswith(key)).split()[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("component")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--memory-mb", type=float, default=64.0)
    a = p.parse_args()
    torch.set_num_threads(1)
    bridge = mechscope.load_model(a.model)
    patch_task(bridge, make_task("docstring", bridge.tokenizer, n=2, seed=0), a.component)  # warm
    task = make_task("docstring", bridge.tokenizer, n=a.n, seed=0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark
    before = _status("VmRSS")
    patch_task(bridge, task, a.component, memory_mb=a.memory_mb)
    peak = _status("VmHWM") - before
    dims = V.model_dims(bridge)
    assert dims is not None
    T = int(task.clean_tokens.shape[1])
    est = V.patch_bytes(dims, a.n, T, a.component, "denoising", a.memory_mb)
    print(
        json.dumps(
            {
                "model": a.model,
                "component": a.component,
                "n": a.n,
                "seq_len": T,
                "memory_mb": a.memory_mb,
                "peak_mb": round(peak / 2**20, 1),
                "estimate_mb": round(est / 2**20, 1),
                "estimate_over_peak": round(est / peak, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
