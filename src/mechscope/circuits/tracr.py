"""Ground truth from tracr: RASP programs compiled to transformers whose circuits are known.

The two tracr tasks of the ACDC paper (Conmy et al. 2023, after Lindner et al. 2023):
    reverse      Aggregate(Select(indices, length - indices - 1, EQ), tokens), vocab {1, 2, 3},
                 data: the 6 permutations of 1 2 3 after BOS;
    proportion   make_frac_prevs(tokens == "x") (the fraction of x's so far), vocab {w, x, y, z},
                 data: all 256 sequences of 4 tokens after BOS.
Compiled with max_seq_len 5 (`tracr-pypi`, the optional extra `mechscope[tracr]`) and converted to
a TransformerLens-native model without LayerNorm (`NativeModel` state-dict layout, ReLU MLPs,
bidirectional attention), bundled under tracr_models/ with the truth.

The true edges are derived from the compiled program: an edge u -> v is in the program's dataflow
when the residual directions u writes (tracr labels each direction with its RASP variable) overlap
those v reads (nonzero rows of W_Q, W_K, W_V or W_in; the unembedding reads the output variable);
of those, the truth keeps the edges the program uses on the task's inputs: removing the edge alone
(zero ablation) changes an output (positions after BOS) by more than 1e-3 on some input. That
drops tracr's bookkeeping reads that never matter on these inputs: the query and key of the
always-true selector of `length`, and the "attend to BOS when nothing matches" terms (`one` into
the query, `tokens:BOS` into the key) of selectors that always match. A head's q/k/v
computation edge is true when its input has a true edge.

`build_tracr()` recompiles both (needs tracr); `load_tracr(name)` loads a bundled model as a
`TracrModel` (a LeanModel with bidirectional attention) with its prompts and truth.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mechscope.circuits.graph import LETTERS, Graph
from mechscope.circuits.metric import CircuitMetric, l2_metric
from mechscope.circuits.patched import CircuitRunner
from mechscope.errors import CircuitError
from mechscope.models.lean import LeanModel

TRACR_DIR = Path(__file__).parent / "tracr_models"
TASKS = ("reverse", "proportion")
MAX_SEQ_LEN = 5
USED_TOL = 1e-3


class TracrModel(LeanModel):
    """LeanModel with bidirectional attention (every position attends to all)."""

    causal = False


# -- compiling and converting ---------------------------------------------------------------------
def _program(name: str) -> tuple[Any, set[Any]]:
    try:
        from tracr.compiler.lib import make_frac_prevs, make_length
        from tracr.rasp import rasp
    except ImportError as e:  # pragma: no cover - depends on the extra
        raise CircuitError(
            "tracr is not installed: pip install 'mechscope[tracr]' (tracr-pypi)"
        ) from e
    if name == "reverse":
        length = make_length()
        opp = length - rasp.indices - 1
        flip = rasp.Select(rasp.indices, opp, rasp.Comparison.EQ)
        return rasp.Aggregate(flip, rasp.tokens), {1, 2, 3}
    if name == "proportion":
        return make_frac_prevs(rasp.tokens == "x"), {"w", "x", "y", "z"}
    raise CircuitError(f"Unknown tracr task {name!r}; choose one of {TASKS}.")


def compile_tracr(name: str) -> tuple[dict[str, Any], dict[str, Tensor], dict[str, Any]]:
    """Compile task `name` with tracr: (config, NativeModel state dict, encoding info)."""
    from tracr.compiler import compiling

    program, vocab = _program(name)
    m = compiling.compile_rasp_to_model(
        program, vocab=vocab, max_seq_len=MAX_SEQ_LEN, compiler_bos="BOS"
    )
    mc, p, labels = m.model_config, m.params, list(m.residual_labels)
    out_name = program.label
    if m.output_encoder is not None and hasattr(m.output_encoder, "encoding_map"):
        enc = m.output_encoder.encoding_map
        out_labels = [f"{out_name}:{v}" for v, _ in sorted(enc.items(), key=lambda kv: kv[1])]
    else:
        out_labels = [out_name]
    d_model = len(labels)
    H, dh = mc.num_heads, mc.key_size

    def t(a: Any) -> Tensor:
        return torch.tensor(a.__array__(), dtype=torch.float32)

    state: dict[str, Tensor] = {
        "tok_embed.weight": t(p["token_embed"]["embeddings"]),
        "pos.weight": t(p["pos_embed"]["embeddings"]),
    }
    for l in range(mc.num_layers):
        a, f = f"transformer/layer_{l}/attn/", f"transformer/layer_{l}/mlp/"
        for x, key in zip("qkv", ("query", "key", "value"), strict=True):
            state[f"layers.{l}.attn.{x}.weight"] = t(p[a + key]["w"]).T.contiguous()
            state[f"layers.{l}.attn.{x}.bias"] = t(p[a + key]["b"])
        state[f"layers.{l}.attn.o.weight"] = t(p[a + "linear"]["w"]).T.contiguous()
        state[f"layers.{l}.attn.o.bias"] = t(p[a + "linear"]["b"])
        state[f"layers.{l}.mlp.fc_in.weight"] = t(p[f + "linear_1"]["w"]).T.contiguous()
        state[f"layers.{l}.mlp.fc_in.bias"] = t(p[f + "linear_1"]["b"])
        state[f"layers.{l}.mlp.fc_out.weight"] = t(p[f + "linear_2"]["w"]).T.contiguous()
        state[f"layers.{l}.mlp.fc_out.bias"] = t(p[f + "linear_2"]["b"])
    head = torch.zeros(len(out_labels), d_model)
    for i, lab in enumerate(out_labels):
        head[i, labels.index(lab)] = 1.0
    state["head.weight"] = head
    config = {
        "d_model": d_model,
        "d_head": dh,
        "n_heads": H,
        "n_layers": mc.num_layers,
        "n_ctx": MAX_SEQ_LEN + 1,
        "d_vocab": int(state["tok_embed.weight"].shape[0]),
        "d_vocab_out": len(out_labels),
        "d_mlp": mc.mlp_hidden_size,
        "attn_only": False,
        "normalization_type": None,
        "act_fn": "relu",
        "attention_dir": "causal" if mc.causal else "bidirectional",
        "positional_embedding_type": "standard",
        "model_name": f"tracr-{name}",
    }
    info = {
        "input_encoding": {str(k): v for k, v in m.input_encoder.encoding_map.items()},
        "residual_labels": labels,
        "output_labels": out_labels,
        "reference_inputs": [_inputs(name)[0]],
        "reference_outputs": [_decoded(m.apply(["BOS", *_inputs(name)[0]]).decoded)],
    }
    return config, state, info


def _decoded(xs: list[Any]) -> list[Any]:
    return [x if isinstance(x, str) else float(x) for x in xs]


def _inputs(name: str) -> list[list[Any]]:
    """The task's inputs (without BOS): ACDC's data."""
    if name == "reverse":
        return [list(p) for p in itertools.permutations([1, 2, 3])]
    return [list(p) for p in itertools.product("wxyz", repeat=4)]


def lean_from_state(config: dict[str, Any], state: dict[str, Tensor]) -> LeanModel:
    """A model from a NativeModel-layout state dict (no LayerNorm): a TracrModel when its
    attention is bidirectional."""
    L, H, dh = config["n_layers"], config["n_heads"], config["d_head"]

    def heads(w: Tensor) -> Tensor:  # [H*dh, d] -> [H, d, dh]
        return w.view(H, dh, -1).transpose(1, 2)

    def stack(key: str) -> Tensor:
        return torch.stack([state[f"layers.{l}.{key}"] for l in range(L)])

    d = config["d_model"]
    weights = dict(
        W_E=state["tok_embed.weight"],
        W_pos=state["pos.weight"],
        W_U=state["head.weight"].T.contiguous(),
        b_U=torch.zeros(config["d_vocab_out"]),
        W_Q=torch.stack([heads(state[f"layers.{l}.attn.q.weight"]) for l in range(L)]),
        W_K=torch.stack([heads(state[f"layers.{l}.attn.k.weight"]) for l in range(L)]),
        W_V=torch.stack([heads(state[f"layers.{l}.attn.v.weight"]) for l in range(L)]),
        b_Q=stack("attn.q.bias").view(L, H, dh),
        b_K=stack("attn.k.bias").view(L, H, dh),
        b_V=stack("attn.v.bias").view(L, H, dh),
        W_O=torch.stack([state[f"layers.{l}.attn.o.weight"].T.reshape(H, dh, d) for l in range(L)]),
        b_O=stack("attn.o.bias"),
        W_in=torch.stack([state[f"layers.{l}.mlp.fc_in.weight"].T for l in range(L)]),
        b_in=stack("mlp.fc_in.bias"),
        W_out=torch.stack([state[f"layers.{l}.mlp.fc_out.weight"].T for l in range(L)]),
        b_out=stack("mlp.fc_out.bias"),
    )
    cls = TracrModel if config["attention_dir"] == "bidirectional" else LeanModel
    return cls.from_weights(weights, act_fn="relu", attn_scale=float(dh) ** 0.5)


def encode(name: str, encoding: dict[str, int]) -> Tensor:
    """Token ids [n_inputs, 1 + len] of the task's inputs with BOS first."""
    return torch.tensor(
        [[encoding["BOS"], *[encoding[str(x)] for x in xs]] for xs in _inputs(name)]
    )


def tracr_metric(model: LeanModel, tokens: Tensor) -> CircuitMetric:
    """ACDC's tracr metric: mean squared error to the model's outputs at positions 1.."""
    positions = tuple(range(1, tokens.shape[1]))
    with torch.no_grad():
        ref = model(tokens, logit_pos=positions)
    return l2_metric(ref, positions)


def structural_edges(graph: Graph, state: dict[str, Tensor], tol: float = 1e-9) -> Tensor:
    """Mask [n_edges] of edges whose sender writes residual directions the receiver reads."""
    L, H = graph.n_layers, graph.n_heads
    dh = state["layers.0.attn.q.weight"].shape[0] // H

    def rows(w: Tensor) -> Tensor:  # directions a [out, d_model] matrix reads
        return w.abs().sum(0) > tol

    writes: dict[str, Tensor] = {
        "embed": state["tok_embed.weight"].abs().sum(0) > tol,
        "pos_embed": state["pos.weight"].abs().sum(0) > tol,
    }
    reads: dict[str, Tensor] = {"logits": rows(state["head.weight"])}
    for l in range(L):
        o = state[f"layers.{l}.attn.o.weight"]  # [d, H*dh]
        for h in range(H):
            writes[f"{l}.{h}"] = o[:, h * dh : (h + 1) * dh].abs().sum(1) > tol
            for x in LETTERS:
                w = state[f"layers.{l}.attn.{x}.weight"][h * dh : (h + 1) * dh]
                reads[f"{l}.{h}.{x}"] = rows(w)
        writes[f"mlp{l}"] = state[f"layers.{l}.mlp.fc_out.weight"].abs().sum(1) > tol
        reads[f"mlp{l}"] = rows(state[f"layers.{l}.mlp.fc_in.weight"])
    mask = torch.zeros(len(graph.edges), dtype=torch.bool)
    for i, e in enumerate(graph.edges):
        if e.kind == "add":
            mask[i] = bool((writes[e.sender] & reads[e.receiver]).any())
    return _with_dc(graph, mask)


def _with_dc(graph: Graph, mask: Tensor) -> Tensor:
    """Set each dc edge L.H.x -> L.H iff the input L.H.x has an edge in `mask` (and the head
    an outgoing one)."""
    for i, e in enumerate(graph.edges):
        if e.kind == "dc":
            has_in = any(bool(mask[j]) for j in graph.in_edges(e.sender))
            has_out = any(bool(mask[j]) for j in graph.out_edges(e.receiver))
            mask[i] = has_in and has_out
    return mask


def used_edges(runner: CircuitRunner, structural: Tensor, tol: float = USED_TOL) -> Tensor:
    """Structural edges whose removal alone changes some output by more than tol (logits at
    the runner's positions)."""
    g = runner.graph
    adds = [i for i in structural.nonzero().flatten().tolist() if g.edges[i].kind == "add"]
    masks = torch.ones(len(adds) + 1, len(g.edges), dtype=torch.bool)
    for row, i in enumerate(adds):
        masks[row + 1, i] = False
    out = runner.logits(masks)  # [n, B, pos, out]
    change = (out[1:] - out[:1]).abs().flatten(1).amax(1)
    mask = torch.zeros(len(g.edges), dtype=torch.bool)
    for row, i in enumerate(adds):
        mask[i] = bool(change[row] > tol)
    return _with_dc(g, mask)


@dataclass
class TracrTask:
    """A bundled tracr model with its prompts, metric and truth (masks over `graph`'s edges)."""

    name: str
    model: LeanModel
    graph: Graph
    tokens: Tensor
    metric: CircuitMetric
    truth: Tensor
    structural: Tensor
    info: dict[str, Any]


def _graph(config: dict[str, Any]) -> Graph:
    return Graph(config["n_layers"], config["n_heads"], True, split_input=True)


def build_tracr(out: Path = TRACR_DIR) -> dict[str, Path]:
    """Compile both tasks and write <out>/<name>/{config.json, model.safetensors, truth.json}."""
    from safetensors.torch import save_file

    written = {}
    for name in TASKS:
        config, state, info = compile_tracr(name)
        lean = lean_from_state(config, state)
        graph = _graph(config)
        tokens = encode(name, info["input_encoding"])
        outputs = tuple(range(1, tokens.shape[1]))  # the BOS position outputs nothing
        runner = CircuitRunner(lean, graph, tokens, None, "zero", logit_pos=outputs)
        structural = structural_edges(graph, state)
        truth = used_edges(runner, structural)
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(config, indent=1))
        save_file(state, str(folder / "model.safetensors"))
        names = [e.name for e in graph.edges]
        info.update(
            task=name,
            ablation="zero",
            used_tolerance=USED_TOL,
            true_edges=[n for n, t in zip(names, truth.tolist(), strict=True) if t],
            structural_edges=[n for n, t in zip(names, structural.tolist(), strict=True) if t],
        )
        (folder / "truth.json").write_text(json.dumps(info, indent=1))
        written[name] = folder
    return written


def load_tracr(name: str, folder: Path = TRACR_DIR) -> TracrTask:
    """A bundled tracr task: model, graph (split embeddings), prompts [n, 5], L2 metric, truth."""
    from safetensors.torch import load_file

    if name not in TASKS:
        raise CircuitError(f"Unknown tracr task {name!r}; choose one of {TASKS}.")
    path = folder / name
    if not (path / "model.safetensors").exists():
        raise CircuitError(f"no tracr model at {path}; build it with build_tracr() (needs tracr)")
    config = json.loads((path / "config.json").read_text())
    info = json.loads((path / "truth.json").read_text())
    state = load_file(str(path / "model.safetensors"))
    lean = lean_from_state(config, state)
    graph = _graph(config)
    tokens = encode(name, info["input_encoding"])
    return TracrTask(
        name,
        lean,
        graph,
        tokens,
        tracr_metric(lean, tokens),
        graph.mask(info["true_edges"]),
        graph.mask(info["structural_edges"]),
        info,
    )
