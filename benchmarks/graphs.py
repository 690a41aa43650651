"""Attribution-graph speed: batched (vectorised VJPs) vs the literal one-backward-per-node
implementation of the same definition, same prompt, same transcoders, same run.

    OMP_NUM_THREADS=1 python benchmarks/graphs.py --transcoders runs/tc [--model code-2l]
        [--repeats 3] [--batch-size 256] [--device cpu]

--transcoders: a folder from `mechscope sae train --kind transcoder --hook all` (or a
circuit-tracer set). Prints, per prompt, the graph size, the median seconds of each
implementation, the speed-up and the largest difference between their adjacency matrices.

circuit-tracer itself (PyPI circuit-tracer 0.5.0) needs transformer-lens < 4 and its own virtual
environment; it is not run here (docs/graphs.md, "Against circuit-tracer").
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch

import mechscope
from mechscope.graphs import AttributionGraph, attribute, attribute_literal
from mechscope.graphs.attribution import prompt_tokens
from mechscope.models.lean import as_lean
from mechscope.sae.transcoder import load_transcoder_set

PROMPTS = [
    "def area(width, height):\n    return width *",
    "import os\nimport sys\n\ndef main(argv):\n    path = os.path.join(",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n"
    "        self.items.",
]


def _time(fn: Callable[[], AttributionGraph], repeats: int) -> tuple[float, AttributionGraph]:
    """(median seconds over `repeats` calls, the last result)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transcoders", required=True)
    ap.add_argument("--model", default="code-2l")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--literal-repeats", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    lean = as_lean(mechscope.load_model(args.model, device=args.device))
    tcs = [
        tc.to(device=lean.device, dtype=lean.W_E.dtype)
        for tc in load_transcoder_set(args.transcoders)
    ]
    print(f"model {args.model} on {lean.device}, torch threads {torch.get_num_threads()}")
    print("| tokens | features | nodes | edges | batched s | literal s | speed-up | max diff |")
    print("|---|---|---|---|---|---|---|---|")
    for prompt in PROMPTS:
        toks = prompt_tokens(lean, prompt)
        tb, g = _time(partial(attribute, lean, tcs, toks, batch_size=args.batch_size), args.repeats)
        tl, ref = _time(partial(attribute_literal, lean, tcs, toks), args.literal_repeats)
        diff = float((g.adjacency - ref.adjacency).abs().max())
        n_edges = int((g.adjacency != 0).sum())
        print(
            f"| {g.n_pos} | {g.n_features} | {g.adjacency.shape[0]} | {n_edges} | {tb:.3f} | "
            f"{tl:.2f} | {tl / tb:.0f}x | {diff:.1e} |"
        )


if __name__ == "__main__":
    main()
