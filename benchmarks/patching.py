"""Benchmark: every head x every position patching sweep, mechscope vs TransformerLens.

Times mechscope's batched sweep (component "z", the head output before W_O, on the shared lean
forward) and TransformerLens's `get_act_patch_attn_head_out_by_pos` (one hooked bridge forward
per (layer, position, head)) on the same model, prompts and metric, for denoising (corrupted run,
clean cache) and noising (clean run, corrupted cache), and prints times, the ratio and the largest
absolute difference between the two results.

    python benchmarks/patching.py                       # code-attn4, docstring, 20 prompts
    python benchmarks/patching.py --model code-2l --n 10 --threads 2
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # TransformerLens's per-patch progress bar

import torch
import transformer_lens.patching as tlp
from rich.console import Console
from rich.table import Table

import mechscope
from mechscope.patching import patch_sweep, task_metric
from mechscope.tasks import make_task


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="code-attn4")
    p.add_argument("--task", default="docstring")
    p.add_argument("--n", type=int, default=20, help="prompts")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--memory-mb", type=float, default=512.0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    bridge = mechscope.load_model(args.model)
    task = make_task(args.task, bridge.tokenizer, n=args.n, seed=0)
    metric = task_metric(task)
    n_patches = bridge.cfg.n_layers * task.seq_len * bridge.cfg.n_heads
    console = Console()
    console.print(
        f"{args.model} / {args.task}: {args.n} prompts x {task.seq_len} tokens, "
        f"{n_patches} patches (layer x pos x head) per sweep, {args.threads} threads"
    )

    def tl_metric(logits: torch.Tensor) -> torch.Tensor:
        return task.score(logits).mean()

    table = Table("direction", "TransformerLens (s)", "mechscope (s)", "speed-up", "max |diff|")
    for direction in ("denoising", "noising"):
        base, src = (
            (task.corrupt_tokens, task.clean_tokens)
            if direction == "denoising"
            else (task.clean_tokens, task.corrupt_tokens)
        )
        with torch.no_grad():
            t0 = time.perf_counter()
            _, cache = bridge.run_with_cache(src)
            theirs = tlp.get_act_patch_attn_head_out_by_pos(bridge, base, cache, tl_metric)
            t_tl = time.perf_counter() - t0
            t0 = time.perf_counter()
            ours = patch_sweep(
                bridge,
                task.clean_tokens,
                task.corrupt_tokens,
                metric,
                "z",
                direction,
                memory_mb=args.memory_mb,
            )
            t_ms = time.perf_counter() - t0
        diff = float((theirs - ours.values).abs().max())
        table.add_row(direction, f"{t_tl:.1f}", f"{t_ms:.1f}", f"{t_tl / t_ms:.1f}x", f"{diff:.1e}")
    console.print(table)


if __name__ == "__main__":
    main()
