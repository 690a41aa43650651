"""Circuit quality on held-out prompts: docstring on code-attn4, over several prompt draws.

    OMP_NUM_THREADS=1 python benchmarks/circuits_heldout.py [--seeds 0 2 4 6 8] [--n 16]

For each search seed s: ACDC (KL, resample ablation, tau) and EAP (logit difference) find their
circuits on n docstring prompts of seed s; every number is then measured on n held-out prompts of
seed s + 1 (`tasks.make_split`), beside the same number on the search prompts (in-sample). Also:
the task's baselines on the test prompts, the KL faithfulness of EAP's top-k circuits, and which
heads noising patching of head outputs (on the test prompts) ranks first. Prints one row per seed
and the mean, standard deviation and range over seeds, as markdown.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch

SIZES = (10, 25, 50, 100, 200, 400)


def one_seed(lean: Any, tokenizer: Any, graph: Any, seed: int, n: int, tau: float) -> dict:
    from mechscope.circuits import (
        CircuitRunner,
        acdc_task,
        eap_task,
        faithfulness_curve,
        measure,
        task_circuit_metric,
    )
    from mechscope.patching import patch_task
    from mechscope.tasks import make_split, run_task

    search, test = make_split("docstring", tokenizer, n, seed)
    base = run_task(lean, test)
    c = acdc_task(lean, search, test, tau, "kl", "resample", graph)
    assert c.search is not None
    in_sample = measure(lean, graph, c.present, search)
    e = eap_task(lean, search, test, c.n_edges, "logit_diff", "resample", graph)
    assert e.scores is not None
    row = {
        "test logit diff clean": base.clean,
        "test logit diff corrupted": base.corrupt,
        "test top-1": base.top1_accuracy,
        "ACDC edges": c.n_edges,
        "ACDC heads": len(c.heads),
        "ACDC KL faithfulness, search": c.search.faithfulness,
        "ACDC KL faithfulness, test": c.faithfulness,
        "ACDC logit-diff faithfulness, search": in_sample["logit_diff"].faithfulness,
        "ACDC logit-diff faithfulness, test": c.test_metrics["logit_diff"].faithfulness,
        "test logit diff: circuit": -c.test_metrics["logit_diff"].value,
        "test logit diff: ablated": -c.test_metrics["logit_diff"].ablated,
        "EAP top-|ACDC| edges shared with ACDC": int((e.present & c.present).sum()),
        "EAP top-|ACDC| KL faithfulness, search": measure(lean, graph, e.present, search)[
            "kl"
        ].faithfulness,
        "EAP top-|ACDC| KL faithfulness, test": e.test_metrics["kl"].faithfulness,
    }
    for name, task in (("search", search), ("test", test)):
        runner = CircuitRunner(lean, graph, task.clean_tokens, task.corrupt_tokens)
        kl = task_circuit_metric(task, "kl", runner.clean_logits)
        curve = faithfulness_curve(runner, kl, e.scores, SIZES)
        for k, f in zip(SIZES, curve.faithfulness, strict=True):
            row[f"EAP top-{k} KL faithfulness, {name}"] = f
    z = patch_task(lean, test, "z", "noising", positions="all")
    effect = (z.values - z.clean).abs().flatten()
    heads = [f"{i // z.values.shape[1]}.{i % z.values.shape[1]}" for i in effect.argsort()]
    top = heads[::-1][:8]
    row["patching top-8 heads among ACDC's"] = sum(h in c.heads for h in top)
    row["_heads"] = c.heads
    row["_top8"] = top
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="code-attn4")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 2, 4, 6, 8])
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--tau", type=float, default=0.01)
    args = p.parse_args()
    import mechscope
    from mechscope.circuits import Graph
    from mechscope.models.lean import LeanModel

    bridge = mechscope.load_model(args.model)
    lean = LeanModel(bridge)
    graph = Graph.from_model(lean)
    print(
        f"{args.model}, docstring, {args.n} search prompts (seed s) and {args.n} test prompts "
        f"(seed s + 1), tau {args.tau:g}, seeds {args.seeds}, torch threads "
        f"{torch.get_num_threads()}"
    )
    rows = []
    for s in args.seeds:
        rows.append(one_seed(lean, bridge.tokenizer, graph, s, args.n, args.tau))
        print(f"seed {s}: ACDC heads {rows[-1]['_heads']}; patching top 8 {rows[-1]['_top8']}")
    keys = [k for k in rows[0] if not k.startswith("_")]
    print(
        "\n| quantity | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean | sd | range |"
    )
    print("|---" * (len(args.seeds) + 4) + "|")
    for k in keys:
        v = [float(r[k]) for r in rows]
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        cells = " | ".join(f"{x:.3g}" for x in v)
        print(
            f"| {k} | {cells} | {statistics.mean(v):.3g} | {sd:.2g} | {min(v):.3g}-{max(v):.3g} |"
        )
    common = set.intersection(*(set(r["_heads"]) for r in rows))
    print(f"\nheads in every seed's ACDC circuit ({len(common)}): {sorted(common)}")


if __name__ == "__main__":
    main()
