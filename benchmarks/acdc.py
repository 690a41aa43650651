"""ACDC speed: mechscope (batched and sequential) vs auto-circuit, same search; EAP vs ACDC.

    python benchmarks/acdc.py [--n 16] [--tau 0.01] [--model code-attn4] [--gqa-only]

(On a shared machine, OMP_NUM_THREADS=1: two threads under contention slowed both sides 10-20x.)

Last row: a grouped-query-attention model (a random Llama built by `save_toy`: 4 layers, d_model
128, 8 query heads sharing 2 key/value heads, gated MLPs of 256, rotary positions), `acdc`
against `acdc_reference` on ACDC's own graph and order (with q/k/v computation edges). HF's
default initialisation (std 0.02) gives a near-uniform model (KL of the ablated model 0.002,
within float noise of any tau); std 0.1 gives KL 0.5, so tau has the same meaning as on a
trained model.

The same search on both sides: the bundled model, docstring prompts, resample ablation, KL at the
last position, one tau, auto-circuit's graph (no q/k/v computation edges, one input node) and
auto-circuit's edge order (it sorts edges by receiver layer; within a layer the order is Python
set order, so its subprocess runs with PYTHONHASHSEED=0 and reports the order it used), and no
skipping of disconnected receivers (auto-circuit tests every edge).

auto-circuit 1.0.1 needs transformer-lens 2.x, so it runs in its own virtual environment, in a
subprocess, exchanging the model, prompts and circuits as files. If `.venv-autocircuit` is missing
the script creates it (minutes; needs the package index):

    python3.11 -m venv .venv-autocircuit
    .venv-autocircuit/bin/pip install torch==2.13.0 transformer-lens==2.16.1 auto-circuit attrs
    .venv-autocircuit/bin/pip install "pyarrow<18" "datasets<3"
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
AC_VENV = ROOT / ".venv-autocircuit"
AC_PYTHON = AC_VENV / "bin" / "python"

AC_SCRIPT = r"""
import json, sys, time, torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from auto_circuit.data import PromptDataLoader, PromptDataset
from auto_circuit.prune_algos.ACDC import acdc_prune_scores
from auto_circuit.utils.graph_utils import patchable_model

d = torch.load(sys.argv[1])
cfg = HookedTransformerConfig(**d["cfg"])
model = HookedTransformer(cfg)
model.load_state_dict(d["state"], strict=False)
model.set_use_attn_result(True)
model.set_use_split_qkv_input(True)
model.set_use_attn_in(True)
if not cfg.attn_only:
    model.set_use_hook_mlp_in(True)
model.eval()
clean, corrupt = d["clean"], d["corrupt"]
with torch.inference_mode():
    logits = model(clean)
model = patchable_model(model, factorized=True, slice_output="last_seq", separate_qkv=True,
                        device=torch.device("cpu"))
order = sorted(model.edges, key=lambda e: e.dest.layer, reverse=True)
ans = [torch.tensor([0])] * len(clean)
loader = PromptDataLoader(PromptDataset(clean, corrupt, ans, ans), seq_len=None, diverge_idx=0,
                          batch_size=len(clean), shuffle=False)
t0 = time.perf_counter()
scores = acdc_prune_scores(model, loader, None, tao_exps=[d["exp"]], tao_bases=[d["base"]])
seconds = time.perf_counter() - t0
name = lambda e: f"{e.src.name}->{e.dest.name}"
kept = [name(e) for e in order if e.prune_score(scores) == float("inf")]
json.dump({"order": [name(e) for e in order], "kept": kept, "seconds": seconds,
           "logits": logits.tolist()}, open(sys.argv[2], "w"))
"""


def _ensure_venv() -> None:
    if AC_PYTHON.exists():
        return
    print(f"creating {AC_VENV} (auto-circuit needs transformer-lens 2.x) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(AC_VENV)], check=True)
    pip = [str(AC_VENV / "bin" / "pip"), "install", "-q"]
    subprocess.run(
        [*pip, "torch==2.13.0", "transformer-lens==2.16.1", "auto-circuit", "attrs"], check=True
    )
    subprocess.run([*pip, "pyarrow<18", "datasets<3"], check=True)


def _ac_name(name: str) -> str:
    """auto-circuit node name -> mechscope's."""
    if name == "Resid Start":
        return "input"
    if name == "Resid End":
        return "logits"
    if name.startswith("MLP "):
        return f"mlp{name[4:]}"
    parts = name[1:].split(".")
    return ".".join(parts[:2] + [p.lower() for p in parts[2:]])


def _export(lean, clean, corrupt, tau: float, path: Path) -> None:
    """The lean model's (processed) weights as a HookedTransformer state dict, plus prompts."""
    L = lean.n_layers
    norm = "LN" if lean.normalized else None
    d_model = lean.W_E.shape[1]
    cfg = dict(
        n_layers=L,
        n_heads=lean.n_heads,
        d_model=d_model,
        d_head=lean.d_head,
        d_vocab=lean.W_E.shape[0],
        n_ctx=max(clean.shape[1], 8),
        act_fn="gelu_new",
        attn_only=lean.attn_only,
        normalization_type=norm,
        positional_embedding_type="standard",
        d_mlp=None if lean.attn_only else lean.layers[0].W_in.shape[1],
    )
    state = {"embed.W_E": lean.W_E, "unembed.W_U": lean.W_U, "unembed.b_U": lean.b_U}
    if lean.ln_final is not None:
        state["ln_final.w"], state["ln_final.b"] = lean.ln_final
    state["pos_embed.W_pos"] = lean.W_pos[: cfg["n_ctx"]]
    for l, w in enumerate(lean.layers):
        for k in ("W_Q", "W_K", "W_V", "b_Q", "b_K", "b_V", "W_O", "b_O"):
            state[f"blocks.{l}.attn.{k}"] = getattr(w, k)
        for name, ln in (("ln1", w.ln1), ("ln2", w.ln2)):
            if ln is not None:
                state[f"blocks.{l}.{name}.w"], state[f"blocks.{l}.{name}.b"] = ln
        if not lean.attn_only:
            for k in ("W_in", "b_in", "W_out", "b_out"):
                state[f"blocks.{l}.mlp.{k}"] = getattr(w, k)
    exp = math.floor(math.log10(tau))
    base = round(tau / 10**exp, 6)
    torch.save(
        {"cfg": cfg, "state": state, "clean": clean, "corrupt": corrupt, "exp": exp, "base": base},
        path,
    )


def gqa_row(n: int, tau: float) -> None:
    """Delta ACDC vs acdc_reference on a random grouped-query-attention Llama (docstring)."""
    import mechscope
    from mechscope.circuits import Graph, acdc, acdc_reference
    from mechscope.models.lean import as_lean
    from mechscope.models.toy import save_toy
    from mechscope.tasks import make_task

    with tempfile.TemporaryDirectory() as tmp:
        folder = save_toy(
            "llama",
            tmp,
            num_hidden_layers=4,
            hidden_size=128,
            num_attention_heads=8,
            num_key_value_heads=2,
            intermediate_size=256,
            initializer_range=0.1,
        )
        bridge = mechscope.load_model(str(folder))
    lean = as_lean(bridge)
    task = make_task("docstring", bridge.tokenizer, n=n, seed=0)
    clean, corrupt = task.clean_tokens, task.corrupt_tokens
    print(
        f"GQA: toy llama (4 layers, 8 query / 2 key-value heads, MLPs), docstring x {n} prompts "
        f"({clean.shape[1]} tokens), tau={tau}, KL, resample; {Graph.from_model(lean).summary()}"
    )
    t0 = time.perf_counter()
    fast = acdc(lean, clean, corrupt, tau)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = acdc_reference(lean, clean, corrupt, tau)
    t_ref = time.perf_counter() - t0
    print(
        f"GQA acdc (delta): {t_fast:7.1f} s, {fast.n_edges} edges kept, {fast.meta['edge_tests']} "
        f"edge tests in {fast.meta['delta_passes']} delta passes; acdc_reference: {t_ref:7.1f} s, "
        f"{ref.n_edges} edges kept; same circuit: {torch.equal(fast.present, ref.present)}; "
        f"speed-up {t_ref / t_fast:.1f}x"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="code-attn4")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--tau", type=float, default=0.01)
    p.add_argument("--skip-autocircuit", action="store_true")
    p.add_argument("--gqa-only", action="store_true", help="only the grouped-query-attention row")
    args = p.parse_args()
    if args.gqa_only:
        gqa_row(args.n, args.tau)
        return
    import mechscope
    from mechscope.circuits import Graph, acdc, acdc_reference, eap_scores
    from mechscope.circuits.metric import task_circuit_metric
    from mechscope.models.lean import LeanModel
    from mechscope.tasks import make_task

    bridge = mechscope.load_model(args.model)
    lean = LeanModel(bridge)
    task = make_task("docstring", bridge.tokenizer, n=args.n, seed=0)
    clean, corrupt = task.clean_tokens, task.corrupt_tokens
    graph = Graph.from_model(lean, dc_edges=False)
    print(
        f"{args.model}, docstring x {args.n} prompts ({clean.shape[1]} tokens), tau={args.tau}, "
        f"KL, resample ablation; {graph.summary()}; torch threads {torch.get_num_threads()}"
    )
    order = None
    ac = None
    if not args.skip_autocircuit:
        _ensure_venv()
        with tempfile.TemporaryDirectory() as tmp:
            _export(lean, clean, corrupt, args.tau, Path(tmp) / "in.pt")
            env = {**os.environ, "PYTHONHASHSEED": "0"}
            subprocess.run(
                [
                    str(AC_PYTHON),
                    "-c",
                    AC_SCRIPT,
                    str(Path(tmp) / "in.pt"),
                    str(Path(tmp) / "out.json"),
                ],
                check=True,
                env=env,
            )
            ac = json.loads((Path(tmp) / "out.json").read_text())
        diff = (torch.tensor(ac["logits"]) - lean(clean)).abs().max().item()
        print(f"auto-circuit's model vs mechscope's: max |logit difference| {diff:.1e}")
        order = [f"{_ac_name(a)}->{_ac_name(b)}" for a, b in (e.split("->") for e in ac["order"])]
    kw = dict(graph=graph, order=order, skip_disconnected=order is None)
    t0 = time.perf_counter()
    fast = acdc(lean, clean, corrupt, args.tau, **kw)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = acdc_reference(lean, clean, corrupt, args.tau, **kw)
    t_ref = time.perf_counter() - t0
    metric = task_circuit_metric(task, "logit_diff")
    t0 = time.perf_counter()
    eap_scores(lean, clean, corrupt, metric, graph=graph)
    t_eap = time.perf_counter() - t0
    print(
        f"mechscope acdc (delta):    {t_fast:7.1f} s, {fast.n_edges} edges kept, "
        f"{fast.meta['edge_tests']} edge tests in {fast.meta['delta_passes']} delta passes"
    )
    print(
        f"mechscope acdc_reference:    {t_ref:7.1f} s, {ref.n_edges} edges kept; same circuit: "
        f"{torch.equal(fast.present, ref.present)}; speed-up {t_ref / t_fast:.1f}x"
    )
    if ac is not None:
        mine = set(fast.edges)
        theirs = {f"{_ac_name(a)}->{_ac_name(b)}" for a, b in (e.split("->") for e in ac["kept"])}
        print(
            f"auto-circuit acdc_prune_scores: {ac['seconds']:7.1f} s, {len(theirs)} edges kept; "
            f"same circuit as mechscope: {mine == theirs} (only in mechscope "
            f"{sorted(mine - theirs)}, only in auto-circuit {sorted(theirs - mine)}); "
            f"mechscope {ac['seconds'] / t_fast:.1f}x faster"
        )
    print(
        f"EAP (all {len(graph.edges)} edges scored): {t_eap:.2f} s = {t_eap / t_fast:.3f} of "
        f"batched ACDC's time"
    )
    gqa_row(args.n, args.tau)


if __name__ == "__main__":
    main()
