"""Attribution graphs against circuit-tracer and against the literal definition: same model, same
transcoders, same prompts, same run.

    OMP_NUM_THREADS=1 python benchmarks/graphs.py [--model code-2l] [--transcoders FOLDER]
        [--repeats 5] [--literal-repeats 1] [--batch-size 256] [--no-literal]
        [--no-circuit-tracer]

--transcoders: a circuit-tracer set (config.yaml + layer_{l}.safetensors) or a folder from
`mechscope sae train --kind transcoder --hook all`; default the model's bundled set
(`sae/transcoders/<model>/circuit-tracer`, float32). Three code prompts, each with BOS (id 0).

1. circuit-tracer (PyPI circuit-tracer 0.5.0, transformer-lens 3.2.1) computes each graph in its
   own virtual environment, in a subprocess that exchanges files with this one: it loads the
   zoo model from a staged copy of its config and tokenizer files as an unfolded, uncentred
   HookedTransformer (what `from_pretrained_and_transcoders` does, offline), the transcoders
   from their absolute folder (read as a local cache), and is given the token ids (0.5.0's BOS
   detection skips id 0, the bundled tokenizer's BOS). mechscope's graph of the same tokens is
   aligned to it (features by (layer, position, id), logits by vocab id) and each block of the
   adjacency (rows: feature / logit targets; columns: feature / error / token sources) is
   compared. `attribute` of both is timed on every prompt, `--repeats` calls each (mechscope's
   half before the subprocess, half after; the machine's load drifts), the same batch size.
2. mechscope's batched `attribute` against `attribute_literal` (one backward pass per target
   node, one dot product per edge): seconds and the largest adjacency difference.

If `.venv-circuittracer` is missing the script creates it (minutes; needs the package index;
torch first, so the CPU build on this machine's disk is the one used):

    python3.11 -m venv .venv-circuittracer
    .venv-circuittracer/bin/pip install torch==2.13.0
    .venv-circuittracer/bin/pip install circuit-tracer==0.5.0 transformer-lens==3.2.1 \
        transformers==4.57.3 nnsight==0.8.1 pyyaml
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import mechscope
from mechscope.artefacts import TOKENIZER_DIR, model_dir, transcoder_dir
from mechscope.graphs import AttributionGraph, attribute, attribute_literal
from mechscope.graphs.attribution import prompt_tokens, setup
from mechscope.models.lean import LeanModel, as_lean
from mechscope.sae.transcoder import Transcoder, load_transcoder_set, save_circuit_tracer

ROOT = Path(__file__).resolve().parents[1]
CT_VENV = ROOT / ".venv-circuittracer"
CT_PYTHON = CT_VENV / "bin" / "python"

PROMPTS = [
    "def area(width, height):\n    return width *",
    "import os\nimport sys\n\ndef main(argv):\n    path = os.path.join(",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n"
    "        self.items.",
]

# argv: in.json (model, tokenizer and transcoder folders, prompts as token ids, repeats,
# batch_size), out.pt (per prompt: the Graph's tensors and the seconds of each call)
CT_SCRIPT = r"""
import json, os, shutil, sys, tempfile, time
from pathlib import Path
import torch
import transformer_lens.loading_from_pretrained as loading
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
from circuit_tracer import attribute
from circuit_tracer.replacement_model.replacement_model_transformerlens import (
    TransformerLensReplacementModel,
)
from circuit_tracer.utils.hf_utils import load_transcoder_from_hub

d = json.load(open(sys.argv[1]))
model_dir, tok_dir = Path(d["model"]), Path(d["tokenizer"])
stage = Path(tempfile.mkdtemp())
cfg = json.loads((model_dir / "config.json").read_text())
if "n_positions" in cfg:  # TL's GPT-2 config conversion reads n_ctx
    cfg["n_ctx"] = cfg["n_positions"]
(stage / "config.json").write_text(json.dumps(cfg))
shutil.copy(model_dir / "model.safetensors", stage)
shutil.copy(tok_dir / "tokenizer.json", stage)
tok_cfg = json.loads((tok_dir / "tokenizer_config.json").read_text())
tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"  # transformers 4.57 lacks the saved class
(stage / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
tokenizer = PreTrainedTokenizerFast.from_pretrained(stage)
hf = AutoModelForCausalLM.from_pretrained(stage, dtype=torch.float32, attn_implementation="eager")
# what TransformerLensReplacementModel.from_pretrained_and_transcoders does, from the local config
tl_cfg = loading.get_pretrained_model_config(str(stage), fold_ln=False, dtype=torch.float32)
state = loading.get_pretrained_state_dict(str(stage), tl_cfg, hf)
transcoders, _ = load_transcoder_from_hub(d["transcoders"], device=torch.device("cpu"),
                                          dtype=torch.float32, lazy_decoder=False)
model = TransformerLensReplacementModel(tl_cfg, tokenizer, move_to_device=False)
model.load_and_process_state_dict(state, fold_ln=False, center_writing_weights=False,
                                  center_unembed=False, fold_value_biases=True)
model._configure_replacement_model(transcoders)
shutil.rmtree(stage)
out = {"torch_threads": torch.get_num_threads(), "graphs": []}
for ids in d["prompts"]:
    seconds = []
    for _ in range(d["repeats"]):
        t0 = time.perf_counter()
        g = attribute(torch.tensor(ids), model, batch_size=d["batch_size"])
        seconds.append(time.perf_counter() - t0)
    ctx = model.setup_attribution(torch.tensor(ids))
    _, cache = model.run_with_cache(torch.tensor([ids]), names_filter=lambda n: n.endswith(
        "ln2.hook_normalized"))
    out["graphs"].append({
        "adjacency": g.adjacency_matrix.float(),
        "active_features": g.active_features,
        "selected_features": g.selected_features,
        "activation_values": g.activation_values.float(),
        "logit_ids": torch.tensor([t.vocab_idx for t in g.logit_targets]),
        "logit_probs": g.logit_probabilities.float(),
        "logits": ctx.logits[0, -1].float(),
        "errors": ctx.error_vectors.float(),
        "token_vectors": ctx.token_vectors.float(),
        "tc_in": torch.stack([cache[f"blocks.{l}.ln2.hook_normalized"][0]
                              for l in range(tl_cfg.n_layers)]).float(),
        "seconds": seconds,
    })
torch.save(out, sys.argv[2])
sys.stdout.flush()
os._exit(0)  # the replacement model's __del__ fails at interpreter shutdown
"""


def _ensure_venv() -> None:
    if CT_PYTHON.exists():
        return
    print(f"creating {CT_VENV} (circuit-tracer 0.5.0 needs transformers <= 4.57.3) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(CT_VENV)], check=True)
    pip = [str(CT_VENV / "bin" / "pip"), "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run(
        [
            *pip,
            "circuit-tracer==0.5.0",
            "transformer-lens==3.2.1",
            "transformers==4.57.3",
            "nnsight==0.8.1",
            "pyyaml",
        ],
        check=True,
    )


def _circuit_tracer(
    model: str, transcoders: Path, prompts: list[Tensor], repeats: int, batch_size: int
) -> dict[str, Any]:
    """circuit-tracer's graphs of `prompts` (token ids with BOS), computed in its venv."""
    _ensure_venv()
    with tempfile.TemporaryDirectory() as tmp:
        spec = {
            "model": str(model_dir(model)),
            "tokenizer": str(TOKENIZER_DIR),
            "transcoders": str(transcoders.resolve()),
            "prompts": [p.tolist() for p in prompts],
            "repeats": repeats,
            "batch_size": batch_size,
        }
        files = [Path(tmp) / "in.json", Path(tmp) / "out.pt"]
        files[0].write_text(json.dumps(spec))
        subprocess.run([str(CT_PYTHON), "-c", CT_SCRIPT, *map(str, files)], check=True)
        return torch.load(files[1], weights_only=True)


def _time(fn: Callable[[], AttributionGraph], repeats: int) -> tuple[list[float], AttributionGraph]:
    """(the seconds of each of `repeats` calls, the last result)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


TOL = 1e-4  # adjacency agreement asked of the two graphs (issue #22)
BLOCKS = [
    (t, s) for t in ("feature", "logit") for s in ("feature", "error", "token")
]  # (target rows, source columns)


def align(g: AttributionGraph, ct: dict[str, Tensor]) -> dict[str, tuple[list[int], list[int]]]:
    """Per node kind, (mechscope's node indices, circuit-tracer's) of the nodes both graphs have,
    aligned: features by (layer, position, id), errors by (layer, position), tokens by position,
    logits by vocab id."""
    feats = ct["active_features"][ct["selected_features"]].tolist()
    ct_feat = {tuple(f): i for i, f in enumerate(feats)}
    ms_feat = {tuple(f): i for i, f in enumerate(g.active_features.tolist())}
    common = [f for f in ms_feat if f in ct_feat]
    ct_logit = {int(t): i for i, t in enumerate(ct["logit_ids"])}
    logits = [(i, ct_logit[int(t)]) for i, t in enumerate(g.logit_tokens) if int(t) in ct_logit]
    n_ct, n_err, n = len(feats), g.n_layers * g.n_pos, g.n_pos
    return {
        "feature": ([ms_feat[f] for f in common], [ct_feat[f] for f in common]),
        "error": (
            [g.n_features + i for i in range(n_err)],
            [n_ct + i for i in range(n_err)],
        ),
        "token": ([g.token_index(p) for p in range(n)], [n_ct + n_err + p for p in range(n)]),
        "logit": (
            [g.logit_index(i) for i, _ in logits],
            [n_ct + n_err + n + j for _, j in logits],
        ),
    }


def compare(g: AttributionGraph, ct: dict[str, Tensor]) -> dict[str, Any]:
    """mechscope's graph `g` against circuit-tracer's (its Graph's tensors), nodes aligned
    (`align`): the node counts (mechscope, circuit-tracer, both), whether the logit targets are
    the same in the same order, the activations' and probabilities' largest difference, per
    block (target kind <- source kind) the largest |difference| and the largest |entry|, and the
    largest |entry| outside those blocks in either matrix (error and token rows, logit columns:
    zero by definition)."""
    nodes = align(g, ct)
    A, B = g.adjacency, ct["adjacency"]
    blocks = {}
    for t, s in BLOCKS:
        (rm, rc), (cm, cc) = nodes[t], nodes[s]
        a, b = A[rm][:, cm], B[rc][:, cc]
        blocks[f"{t} <- {s}"] = (float((a - b).abs().max()), float(b.abs().max()))
    rest = 0.0
    for M, k in ((A, 0), (B, 1)):
        filled = torch.zeros_like(M, dtype=torch.bool)
        for t, s in BLOCKS:
            filled[torch.tensor(nodes[t][k])[:, None], torch.tensor(nodes[s][k])] = True
        rest = max(rest, float(M[~filled].abs().max()))
    (fm, fc), (lm, lc) = nodes["feature"], nodes["logit"]
    ct_acts = ct["activation_values"][ct["selected_features"]]
    lm = [i - g.logit_index(0) for i in lm]  # node indices -> logit positions
    lc = [j - B.shape[0] + len(ct["logit_ids"]) for j in lc]
    return {
        "features": (g.n_features, len(ct["selected_features"]), len(fm)),
        "logits_same": g.logit_tokens.tolist() == ct["logit_ids"].tolist(),
        "act_diff": float((g.activation_values[fm] - ct_acts[fc]).abs().max()),
        "prob_diff": float((g.logit_probs[lm] - ct["logit_probs"][lc]).abs().max()),
        "blocks": blocks,
        "rest": rest,
    }


def conventions(
    lean: LeanModel, tcs: list[Transcoder], g: AttributionGraph, ct: dict[str, Tensor]
) -> dict[str, tuple[float, float]]:
    """What the two runs feed the graph, mechscope's (the folded, centred bridge) against
    circuit-tracer's (an unfolded, uncentred HookedTransformer): per quantity the largest
    |difference| and, for vectors, the largest after removing each one's mean (over d_model;
    over the vocabulary for logits).

    circuit-tracer reports no target values or kappa; here its feature target's value is the
    pre-activation - b_enc at its own transcoder input (the same encoder), a logit target's the
    demeaned logit of its own run, and its kappa = value - row sum (completeness)."""
    s = setup(lean, tcs, g.tokens)
    nodes = align(g, ct)

    def diff(a: Tensor, b: Tensor, centre: bool = True) -> tuple[float, float]:
        a, b = a.double(), b.double()
        centred = (a - a.mean(-1, keepdim=True)) - (b - b.mean(-1, keepdim=True))
        return float((a - b).abs().max()), float(centred.abs().max()) if centre else math.nan

    out = {
        "error vectors": diff(s.fz.errors, ct["errors"]),
        "token vectors": diff(s.embed, ct["token_vectors"]),
        "transcoder inputs": diff(torch.stack(s.fz.tc_in), ct["tc_in"]),
        "last-position logits": diff(s.fz.logits, ct["logits"]),
    }
    (fm, fc), (lm, lc) = nodes["feature"], nodes["logit"]
    tc_in, logits = ct["tc_in"].double(), ct["logits"].double()
    feats = g.active_features[fm].tolist()
    pre = [float(tc_in[l, p] @ tcs[l].W_enc[:, f].detach().double()) for l, p, f in feats]
    vocab = g.logit_tokens[torch.tensor(lm) - g.logit_index(0)]
    ct_value = {
        "feature": torch.tensor(pre, dtype=torch.float64),
        "logit": (logits - logits.mean())[vocab],
    }
    for kind, (rm, rc) in (("feature", (fm, fc)), ("logit", (lm, lc))):
        ct_kappa = ct_value[kind] - ct["adjacency"][rc].double().sum(1)
        out[f"{kind} target values"] = diff(g.values[rm], ct_value[kind], centre=False)
        out[f"{kind} target kappa"] = diff(g.bias[rm], ct_kappa, centre=False)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transcoders", default=None, help="default: the model's bundled set")
    ap.add_argument("--model", default="code-2l")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls of each attribute")
    ap.add_argument("--literal-repeats", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--no-literal", action="store_true", help="skip attribute_literal")
    ap.add_argument("--no-circuit-tracer", action="store_true", help="skip circuit-tracer")
    args = ap.parse_args()
    if args.repeats < 1 or args.literal_repeats < 1:
        ap.error("--repeats and --literal-repeats must be at least 1")
    folder = Path(args.transcoders or transcoder_dir(args.model) / "circuit-tracer")
    lean = as_lean(mechscope.load_model(args.model, device="cpu"))
    tcs = [tc.to(dtype=lean.W_E.dtype) for tc in load_transcoder_set(folder)]
    toks = [prompt_tokens(lean, p) for p in PROMPTS]
    print(f"model {args.model}, transcoders {folder}, torch threads {torch.get_num_threads()}")
    half = (args.repeats + 1) // 2
    runs: list[tuple[list[float], AttributionGraph]] = []
    for t, p in zip(toks, PROMPTS, strict=True):
        runs.append(_time(partial(attribute, lean, tcs, t, p, args.batch_size), half))
    if not args.no_circuit_tracer:
        with tempfile.TemporaryDirectory() as tmp:
            ct_folder = folder
            if not (folder / "config.yaml").exists():
                ct_folder = save_circuit_tracer(tcs, Path(tmp) / "ct", args.model)
            ct = _circuit_tracer(args.model, ct_folder, toks, args.repeats, args.batch_size)
        print(f"circuit-tracer 0.5.0 in {CT_VENV.name}, torch threads {ct['torch_threads']}")
        for i, (t, p) in enumerate(zip(toks, PROMPTS, strict=True)):
            if args.repeats > half:
                more, _ = _time(
                    partial(attribute, lean, tcs, t, p, args.batch_size), args.repeats - half
                )
                runs[i][0].extend(more)
        heads = [f"{t} <- {s}" for t, s in BLOCKS]
        print(
            "\nadjacency, mechscope - circuit-tracer, nodes aligned: max |difference| (max |entry|)"
        )
        print(
            "| tokens | features (ms / ct / both) | same logits | activations | probabilities | "
            + " | ".join(heads)
            + " | elsewhere |"
        )
        print("|---" * (6 + len(heads)) + "|")
        convs, same = [], True
        for (_, g), c in zip(runs, ct["graphs"], strict=True):
            r = compare(g, c)
            worst = max(max(d for d, _ in r["blocks"].values()), r["rest"])
            same &= len(set(r["features"])) == 1 and r["logits_same"] and worst <= TOL
            cells = [f"{d:.1e} ({m:.2g})" for d, m in r["blocks"].values()]
            print(
                f"| {g.n_pos} | {' / '.join(map(str, r['features']))} | {r['logits_same']} | "
                f"{r['act_diff']:.1e} | {r['prob_diff']:.1e} | "
                + " | ".join(cells)
                + f" | {r['rest']:.1e} |"
            )
            convs.append(conventions(lean, tcs, g, c))
        print(f"same features, same logits, every entry within {TOL:g}: {'yes' if same else 'NO'}")
        print("\ninputs to the graph, mechscope - circuit-tracer: max |difference| (centred)")
        print("| quantity | " + " | ".join(f"{g.n_pos} tokens" for _, g in runs) + " |")
        print("|---" * (1 + len(runs)) + "|")
        for q in convs[0]:
            cells = [f"{cv[q][0]:.1e} ({cv[q][1]:.1e})" for cv in convs]
            print(f"| {q} | " + " | ".join(cells).replace(" (nan)", "") + " |")
        print(f"\nattribute seconds (median of {args.repeats}, batch {args.batch_size})")
        print("| tokens | nodes | mechscope s | circuit-tracer s | circuit-tracer / mechscope |")
        print("|---|---|---|---|---|")
        for (times, g), c in zip(runs, ct["graphs"], strict=True):
            tm, tc_ = statistics.median(times), statistics.median(c["seconds"])
            print(
                f"| {g.n_pos} | {g.adjacency.shape[0]} | {tm:.3f} | {tc_:.3f} | {tc_ / tm:.1f}x |"
            )
    if args.no_literal:
        return
    print("\nbatched against literal")
    print("| tokens | features | nodes | edges | batched s | literal s | speed-up | max diff |")
    print("|---|---|---|---|---|---|---|---|")
    for (times, g), t in zip(runs, toks, strict=True):
        tl, ref = _time(partial(attribute_literal, lean, tcs, t), args.literal_repeats)
        tb, tl_ = statistics.median(times), statistics.median(tl)
        diff = float((g.adjacency - ref.adjacency).abs().max())
        n_edges = int((g.adjacency != 0).sum())
        print(
            f"| {g.n_pos} | {g.n_features} | {g.adjacency.shape[0]} | {n_edges} | {tb:.3f} | "
            f"{tl_:.2f} | {tl_ / tb:.0f}x | {diff:.1e} |"
        )


if __name__ == "__main__":
    main()
