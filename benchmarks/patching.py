"""Benchmark: layer x position (x head) patching sweeps, mechscope vs TransformerLens.

For each model and component, times mechscope's batched sweep (on the shared lean forward) and
TransformerLens's `transformer_lens.patching` function for it (one hooked bridge forward per
patch) on the same model, prompts and metric, for denoising (corrupted run, clean cache) and
noising (clean run, corrupted cache), and prints times, the ratio and the largest absolute
difference between the two results. TL sizes the head axis of `k` and `v` sweeps by
`cfg.n_key_value_heads`, so on grouped-query models (code-llama-2l: 4 query, 2 key/value heads)
its k/v functions patch key/value heads as mechscope does. Components a model lacks (`mlp_out` on
the attention-only code-attn4) are listed as skipped.

    python benchmarks/patching.py                       # code-attn4, docstring, 20 prompts, z
    python benchmarks/patching.py --model code-attn4 --model code-llama-2l \\
        -c z -c q -c k -c v -c resid_pre -c attn_out -c mlp_out
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

# component -> (TransformerLens function, the hook it patches in layer 0)
TL_FUNCTIONS = {
    "z": (tlp.get_act_patch_attn_head_out_by_pos, "blocks.0.attn.hook_z"),
    "q": (tlp.get_act_patch_attn_head_q_by_pos, "blocks.0.attn.hook_q"),
    "k": (tlp.get_act_patch_attn_head_k_by_pos, "blocks.0.attn.hook_k"),
    "v": (tlp.get_act_patch_attn_head_v_by_pos, "blocks.0.attn.hook_v"),
    "resid_pre": (tlp.get_act_patch_resid_pre, "blocks.0.hook_resid_pre"),
    "attn_out": (tlp.get_act_patch_attn_out, "blocks.0.hook_attn_out"),
    "mlp_out": (tlp.get_act_patch_mlp_out, "blocks.0.hook_mlp_out"),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", action="append", help="repeat for several (default code-attn4)")
    p.add_argument("-c", "--component", action="append", choices=sorted(TL_FUNCTIONS))
    p.add_argument("--task", default="docstring")
    p.add_argument("--n", type=int, default=20, help="prompts")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--memory-mb", type=float, default=512.0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    console.print(f"{args.task}, {args.n} prompts, {args.threads} threads, load {os.getloadavg()}")
    table = Table(
        "model", "component", "patches", "direction", "TransformerLens (s)", "mechscope (s)",
        "speed-up", "max |diff|",
    )  # fmt: skip
    for name in args.model or ["code-attn4"]:
        bridge = mechscope.load_model(name)
        task = make_task(args.task, bridge.tokenizer, n=args.n, seed=0)
        metric = task_metric(task)
        n_heads, n_kv = bridge.cfg.n_heads, bridge.cfg.n_key_value_heads or bridge.cfg.n_heads
        if n_kv != n_heads:
            console.print(
                f"{name}: grouped-query attention ({n_heads} query, {n_kv} key/value heads); "
                "k and v sweep key/value heads on both sides (TL sizes them by n_key_value_heads)"
            )

        def tl_metric(logits: torch.Tensor, task=task) -> torch.Tensor:
            return task.score(logits).mean()

        for component in args.component or ["z"]:
            fn, hook = TL_FUNCTIONS[component]
            if hook not in bridge.hook_dict:
                console.print(f"{name}: no {hook}, {component} skipped")
                continue
            for direction in ("denoising", "noising"):
                base, src = (
                    (task.corrupt_tokens, task.clean_tokens)
                    if direction == "denoising"
                    else (task.clean_tokens, task.corrupt_tokens)
                )
                with torch.no_grad():
                    t0 = time.perf_counter()
                    _, cache = bridge.run_with_cache(src)
                    theirs = fn(bridge, base, cache, tl_metric)
                    t_tl = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    ours = patch_sweep(
                        bridge,
                        task.clean_tokens,
                        task.corrupt_tokens,
                        metric,
                        component,
                        direction,
                        memory_mb=args.memory_mb,
                    )
                    t_ms = time.perf_counter() - t0
                assert theirs.shape == ours.values.shape, (theirs.shape, ours.values.shape)
                diff = float((theirs - ours.values).abs().max())
                row = (
                    name, component, str(ours.values.numel()), direction, f"{t_tl:.1f}",
                    f"{t_ms:.2f}", f"{t_tl / t_ms:.1f}x", f"{diff:.1e}",
                )  # fmt: skip
                table.add_row(*row)
                console.print(" | ".join(row))  # as it goes: a long run shows partial results
    console.print(table)
    console.print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
