"""Benchmark: layer x position (x head) patching sweeps: mechscope, TransformerLens and the floors.

For each model, component and direction (denoising: corrupted run, clean cache; noising: clean
run, corrupted cache), times on the same model, prompts and metric:

- TransformerLens's `transformer_lens.patching` function (one hooked bridge forward per patch);
- mechscope's `patch_sweep` (everything: base runs, baselines, the sweep);
- three floors, each as plain batched lean forwards without hooks, unembedding only the metric's
  last position, one forward row per (patched run, prompt), chunked like the engine:
  "brute": a full forward per patched run; "layers": only the layers from the patched one on
  (from the base run's residual there); "layers+pos": those layers and only the positions from
  the first patched one on (earlier positions' keys and values from the base run). The floors'
  base runs (residual stream, keys, values) are cached outside their time.

and prints the times, mechscope's ratio to each floor and to TransformerLens, and the largest
absolute difference between the two results. TL sizes the head axis of `k` and `v` sweeps by
`cfg.n_key_value_heads`, so on grouped-query models (code-llama-2l: 4 query, 2 key/value heads)
its k/v functions patch key/value heads as mechscope does. Components a model lacks (`mlp_out` on
the attention-only code-attn4) are listed as skipped. Times are the best of `--repeats` runs
(TransformerLens: one run). Use OMP_NUM_THREADS=1 on a shared machine: ratios within one run
are what count.

    OMP_NUM_THREADS=1 python benchmarks/patching.py          # 4 models, z and resid_pre, 20 prompts
    OMP_NUM_THREADS=1 python benchmarks/patching.py --quick  # 4 prompts, no TransformerLens
    python benchmarks/patching.py --model code-attn4 -c z -c k -c mlp_out --n 10 --threads 2
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from functools import partial

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # TransformerLens's per-patch progress bar

import torch
import transformer_lens.patching as tlp
from rich.console import Console
from rich.table import Table

import mechscope
from mechscope.models.lean import LeanModel, as_lean
from mechscope.patching import PatchMetric, patch_sweep, task_metric
from mechscope.patching.engine import row_bytes
from mechscope.patching.specs import check_component
from mechscope.tasks import make_task

MODELS = ["code-attn4", "code-2l", "code-4l", "code-llama-2l"]

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


def best(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of `repeats` timed calls of fn, in seconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


@torch.no_grad()
def floors(
    lean: LeanModel,
    base: torch.Tensor,
    component: str,
    metric: PatchMetric,
    memory_mb: float,
    repeats: int,
) -> dict[str, float]:
    """Seconds of the three floors for a layer x position (x head) sweep of `component` on the
    base prompts `base` [batch, pos]: {"brute", "layers", "layers+pos"}."""
    batch, seq_len = base.shape
    logit_pos = [p % seq_len for p in metric.positions or range(seq_len)]
    heads = lean.heads_at(check_component(component)[0]) if component != "resid_pre" else 1
    _, cache = lean.run_with_cache(base)
    resid = [cache[f"blocks.{l}.hook_resid_pre"] for l in range(lean.n_layers)]
    kv = [(cache[lean.key_hook(l)], cache[f"blocks.{l}.attn.hook_v"]) for l in range(lean.n_layers)]
    # (layer, first position) of every patched run
    runs = [(l, min(p, min(logit_pos))) for l in range(lean.n_layers) for p in range(seq_len)]
    runs = [r for r in runs for _ in range(heads)]

    def forwards(start_layers: bool, start_pos: bool) -> None:
        groups: dict[tuple[int, int], int] = {}
        for l, p in runs:
            key = (l if start_layers else 0, p if start_pos else 0)
            groups[key] = groups.get(key, 0) + 1
        for (l, p), count in groups.items():
            per_run = batch * row_bytes(lean, seq_len - p, seq_len, len(logit_pos))
            chunk = max(1, int(memory_mb * 2**20 // per_run))
            for at in range(0, count, chunk):
                n = min(chunk, count - at)
                tokens = base.repeat(n, 1)
                if not start_layers:
                    lean(tokens, logit_pos=logit_pos)
                    continue
                prefix = [
                    (k[:, :p].repeat(n, 1, 1, 1), v[:, :p].repeat(n, 1, 1, 1)) if i >= l else None
                    for i, (k, v) in enumerate(kv)
                ]
                lean(
                    tokens,
                    start_layer=l,
                    resid=resid[l][:, p:].repeat(n, 1, 1),
                    logit_pos=logit_pos,
                    start_pos=p,
                    prefix_kv=prefix if p else None,
                )

    return {
        "brute": best(lambda: forwards(False, False), repeats),
        "layers": best(lambda: forwards(True, False), repeats),
        "layers+pos": best(lambda: forwards(True, True), repeats),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", action="append", help=f"repeat for several (default {MODELS})")
    p.add_argument("-c", "--component", action="append", choices=sorted(TL_FUNCTIONS))
    p.add_argument("--task", default="docstring")
    p.add_argument("--n", type=int, default=20, help="prompts")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--memory-mb", type=float, default=512.0)
    p.add_argument("--repeats", type=int, default=2, help="timed runs of mechscope and floors")
    p.add_argument("--no-tl", action="store_true", help="skip TransformerLens (slow)")
    p.add_argument("--quick", action="store_true", help="4 prompts, 1 repeat, no TransformerLens")
    args = p.parse_args()
    if args.quick:
        args.n, args.repeats, args.no_tl = 4, 1, True
    torch.set_num_threads(args.threads)
    console = Console(width=250)
    console.print(
        f"{args.task}, {args.n} prompts, {args.threads} threads, best of {args.repeats}, "
        f"load {os.getloadavg()}"
    )
    table = Table(
        "model", "component", "patches", "direction", "TL (s)", "mechscope (s)", "brute (s)",
        "layers (s)", "layers+pos (s)", "vs TL", "vs brute", "vs layers", "vs layers+pos",
        "max |diff|",
    )  # fmt: skip
    for name in args.model or MODELS:
        bridge = mechscope.load_model(name)
        lean = as_lean(bridge)
        task = make_task(args.task, bridge.tokenizer, n=args.n, seed=0)
        metric = task_metric(task)

        def tl_metric(logits: torch.Tensor, task=task) -> torch.Tensor:
            return task.score(logits).mean()

        for component in args.component or ["z", "resid_pre"]:
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
                sweep = partial(
                    patch_sweep,
                    lean,
                    task.clean_tokens,
                    task.corrupt_tokens,
                    metric,
                    component,
                    direction,
                    memory_mb=args.memory_mb,
                )
                with torch.no_grad():
                    ours = sweep()
                    t_ms = best(sweep, args.repeats)
                    floor = floors(lean, base, component, metric, args.memory_mb, args.repeats)
                    t_tl, diff = float("nan"), float("nan")
                    if not args.no_tl:
                        t0 = time.perf_counter()
                        _, cache = bridge.run_with_cache(src)
                        theirs = fn(bridge, base, cache, tl_metric)
                        t_tl = time.perf_counter() - t0
                        assert theirs.shape == ours.values.shape, (theirs.shape, ours.values.shape)
                        diff = float((theirs - ours.values).abs().max())
                tl = (lambda text: "-") if args.no_tl else (lambda text: text)
                row = (
                    name, component, str(ours.values.numel()), direction, tl(f"{t_tl:.1f}"),
                    f"{t_ms:.2f}", *(f"{floor[k]:.2f}" for k in ("brute", "layers", "layers+pos")),
                    tl(f"{t_tl / t_ms:.1f}x"),
                    *(f"{t_ms / floor[k]:.2f}" for k in ("brute", "layers", "layers+pos")),
                    tl(f"{diff:.1e}"),
                )  # fmt: skip
                table.add_row(*row)
                console.print(" | ".join(row))  # as it goes: a long run shows partial results
    console.print(table)
    console.print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
