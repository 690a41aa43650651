"""ACDC speed: mechscope (batched and sequential) vs auto-circuit, same search; EAP vs ACDC.

    OMP_NUM_THREADS=1 python benchmarks/acdc.py [--n 16] [--tau 0.01] [--model code-attn4]
        [--repeats 2] [--quick] [--gqa-only]

(On a shared machine, OMP_NUM_THREADS=1: two threads under contention slowed both sides 10-20x.)
mechscope's `acdc` runs batched (up to 16 candidate edges per pass, the default) and sequential
(`batch_size=1`, one edge per pass), alternately, `--repeats` times before auto-circuit's run and
as many after it (the machine's load drifts; ratios are to the mean of those runs). `--quick`:
8 prompts, one repeat, no `acdc_reference` on the first model (a few minutes in all).

Last row: a grouped-query-attention model (a random Llama built by `save_toy`: 4 layers, d_model
128, 8 query heads sharing 2 key/value heads, gated MLPs of 256, rotary positions), `acdc`
against `acdc_reference` on ACDC's own graph and order (with q/k/v computation edges). HF's
default initialisation (std 0.02) gives a near-uniform model (KL of the ablated model 0.002,
within float noise of any tau); std 0.1 gives KL 0.5, so tau has the same meaning as on a
trained model.

The same search on both sides: the bundled model, docstring prompts, resample ablation, KL at the
last position, one tau, auto-circuit's graph (no q/k/v computation edges, one input node) and
auto-circuit's edge order (it sorts its edges by receiver layer, stably; they are a set of
objects, iterated in memory order, so its script first puts them in a fixed pseudo-random order,
by a hash of their names, the same in every process: receivers interleave within a layer), and
no skipping of disconnected receivers (auto-circuit tests every edge).

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
from hashlib import sha1
from ordered_set import OrderedSet
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
name = lambda e: f"{e.src.name}->{e.dest.name}"
# its edges are a set of objects, iterated in memory order: a fixed pseudo-random order instead,
# the same in every process (acdc_prune_scores sorts them by receiver layer, stably)
model.edges = OrderedSet(sorted(model.edges, key=lambda e: sha1(name(e).encode()).hexdigest()))
order = sorted(model.edges, key=lambda e: e.dest.layer, reverse=True)
if sys.argv[3] == "order":  # the edge order only
    out = {"order": [name(e) for e in order], "logits": logits.tolist()}
    json.dump(out, open(sys.argv[2], "w"))
    sys.exit()
ans = [torch.tensor([0])] * len(clean)
loader = PromptDataLoader(PromptDataset(clean, corrupt, ans, ans), seq_len=None, diverge_idx=0,
                          batch_size=len(clean), shuffle=False)
t0 = time.perf_counter()
scores = acdc_prune_scores(model, loader, None, tao_exps=[d["exp"]], tao_bases=[d["base"]])
seconds = time.perf_counter() - t0
kept = [name(e) for e in order if e.prune_score(scores) == float("inf")]
json.dump({"order": [name(e) for e in order], "kept": kept, "seconds": seconds},
          open(sys.argv[2], "w"))
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
    norm = "LN" if lean.norm.kind else None
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


def _timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


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
    fast, t_fast = _timed(acdc, lean, clean, corrupt, tau)
    seq, t_seq = _timed(acdc, lean, clean, corrupt, tau, batch_size=1)
    ref, t_ref = _timed(acdc_reference, lean, clean, corrupt, tau)
    _, t_fast2 = _timed(acdc, lean, clean, corrupt, tau)
    t_fast = (t_fast + t_fast2) / 2
    same = torch.equal(fast.present, ref.present) and torch.equal(seq.present, ref.present)
    print(
        f"GQA acdc batched: {t_fast:7.1f} s (mean of 2), {fast.n_edges} edges kept, "
        f"{fast.meta['edge_tests']} edge tests in {fast.meta['delta_passes']} delta passes; "
        f"sequential: {t_seq:7.1f} s; acdc_reference: {t_ref:7.1f} s, {ref.n_edges} edges kept; "
        f"same circuit: {same}; batched {t_ref / t_fast:.1f}x acdc_reference, "
        f"{t_seq / t_fast:.2f}x sequential"
    )


def _auto_circuit(lean, clean, corrupt, tau: float, what: str) -> dict:
    """Run auto-circuit's script in its venv: what = "order" (its edge order and logits only)
    or "acdc" (its ACDC, timed inside)."""
    _ensure_venv()
    with tempfile.TemporaryDirectory() as tmp:
        _export(lean, clean, corrupt, tau, Path(tmp) / "in.pt")
        files = [str(Path(tmp) / "in.pt"), str(Path(tmp) / "out.json")]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        subprocess.run([str(AC_PYTHON), "-c", AC_SCRIPT, *files, what], check=True, env=env)
        out = json.loads((Path(tmp) / "out.json").read_text())
    for key in ("order", "kept"):
        if key in out:
            out[key] = [
                f"{_ac_name(a)}->{_ac_name(b)}" for a, b in (e.split("->") for e in out[key])
            ]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="code-attn4")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--tau", type=float, default=0.01)
    p.add_argument("--skip-autocircuit", action="store_true")
    p.add_argument("--repeats", type=int, default=2, help="runs of each side before and after")
    p.add_argument("--quick", action="store_true", help="8 prompts, 1 repeat, no acdc_reference")
    p.add_argument("--gqa-only", action="store_true", help="only the grouped-query-attention row")
    args = p.parse_args()
    if args.quick:
        args.n, args.repeats = 8, 1
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
    if not args.skip_autocircuit:
        first = _auto_circuit(lean, clean, corrupt, args.tau, "order")
        diff = (torch.tensor(first["logits"]) - lean(clean)).abs().max().item()
        print(f"auto-circuit's model vs mechscope's: max |logit difference| {diff:.1e}")
        order = first["order"]
    kw = dict(graph=graph, order=order, skip_disconnected=order is None)
    times: dict[str, list[float]] = {"batched": [], "sequential": []}

    def ours() -> tuple:
        out = {}
        for _ in range(args.repeats):
            for name, bs in (("batched", 16), ("sequential", 1)):
                out[name], t = _timed(acdc, lean, clean, corrupt, args.tau, batch_size=bs, **kw)
                times[name].append(t)
        return out["batched"], out["sequential"]

    fast, seq = ours()
    ac = None
    if order is not None:
        ac = _auto_circuit(lean, clean, corrupt, args.tau, "acdc")
        ours()
    t_fast = sum(times["batched"]) / len(times["batched"])
    t_seq = sum(times["sequential"]) / len(times["sequential"])
    spread = lambda xs: f"{min(xs):.1f}-{max(xs):.1f}"  # noqa: E731
    print(
        f"mechscope acdc batched:     {t_fast:7.1f} s (mean of {len(times['batched'])}: "
        f"{spread(times['batched'])}), {fast.n_edges} edges kept, {fast.meta['edge_tests']} edge "
        f"tests in {fast.meta['delta_passes']} delta passes"
    )
    print(
        f"mechscope acdc sequential:  {t_seq:7.1f} s (mean of {len(times['sequential'])}: "
        f"{spread(times['sequential'])}), {seq.n_edges} edges kept, same circuit as batched: "
        f"{torch.equal(fast.present, seq.present)}; batched {t_seq / t_fast:.2f}x sequential"
    )
    if not args.quick:
        ref, t_ref = _timed(acdc_reference, lean, clean, corrupt, args.tau, **kw)
        print(
            f"mechscope acdc_reference:   {t_ref:7.1f} s, {ref.n_edges} edges kept; same circuit: "
            f"{torch.equal(fast.present, ref.present)}; batched {t_ref / t_fast:.1f}x"
        )
    if ac is not None:
        mine, theirs = set(fast.edges), set(ac["kept"])
        print(
            f"auto-circuit acdc_prune_scores: {ac['seconds']:7.1f} s, {len(theirs)} edges kept; "
            f"same circuit as mechscope: {mine == theirs} (only in mechscope "
            f"{sorted(mine - theirs)}, only in auto-circuit {sorted(theirs - mine)}); "
            f"mechscope batched {ac['seconds'] / t_fast:.1f}x, sequential "
            f"{ac['seconds'] / t_seq:.1f}x faster"
        )
    metric = task_circuit_metric(task, "logit_diff")
    _, t_eap = _timed(eap_scores, lean, clean, corrupt, metric, graph=graph)
    print(
        f"EAP (all {len(graph.edges)} edges scored): {t_eap:.2f} s = {t_eap / t_fast:.3f} of "
        f"batched ACDC's time"
    )
    gqa_row(args.n, args.tau)


if __name__ == "__main__":
    main()
