"""Ground truth from tracr: RASP programs compiled to transformers whose circuits are known.

Any RASP program: `tracr_task(program, vocab, inputs)` compiles it (tracr-pypi, the optional extra
`mechscope[tracr]`), converts it to a TransformerLens-native model without LayerNorm
(`NativeModel` state-dict layout, ReLU MLPs, bidirectional attention) and derives its truth under
each ablation on the given inputs. The two tracr tasks of the ACDC paper (Conmy et al. 2023, after
Lindner et al. 2023) are presets, bundled under tracr_models/ with their truths (`load_tracr`):
    reverse      Aggregate(Select(indices, length - indices - 1, EQ), tokens), vocab {1, 2, 3};
                 inputs: the 6 permutations of 1 2 3 after BOS (ACDC's data);
    proportion   make_frac_prevs(tokens == "x"), vocab {w, x, y, z}; inputs: ACDC's data, all
                 256 sequences of 4 token ids 0..3 (ACDC encodes w x y z as ord(c) - ord("w"),
                 which in tracr's encoding are BOS, pad, w, x; no BOS first).
Both compiled with max_seq_len 5.

The truth is derived from the compiled program. An edge u -> v is in the program's dataflow
("structural") when the residual directions u writes (tracr labels each direction with its RASP
variable) overlap those v reads (nonzero rows of W_Q, W_K, W_V or W_in; the unembedding reads the
output variable). Of those, the truth under an ablation keeps the edges whose removal alone
changes an output (every position after the first) by more than 1e-3 on some input:
    zero               u's term in v's input set to zero (ACDC's tracr truth, its convention);
    resample           u's term replaced by u's output on another input x' of the task, for some
                       ordered pair (x, x') of inputs, x' = x included (auto-circuit's convention,
                       Miller et al. 2024: the edges a resample ablation can find);
    resample_shuffled  the same, where the run on x' also has its positional embeddings permuted
                       by ACDC's fixed permutation (`shuffle_positions`): the corrupted inputs of
                       ACDC's tracr runs under resample ablation.
A head's q/k/v computation edge is true when its input has a true edge. Zero ablation drops
tracr's bookkeeping reads that never matter on the inputs (the query and key of `length`'s
always-true selector); resample ablation also drops what is the same on every input (positions,
a constant `length`), unless the positions are shuffled.

`build_tracr()` recompiles the presets (needs tracr); `load_tracr(name)` loads a bundled preset, or
a folder written by `save_tracr`, as a `TracrTask` (model: a LeanModel with bidirectional
attention).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mechscope.artefacts import TRACR_DIR
from mechscope.circuits.graph import LETTERS, Graph
from mechscope.circuits.metric import CircuitMetric, l2_metric
from mechscope.circuits.patched import CircuitRunner
from mechscope.errors import CircuitError
from mechscope.files import read_json, read_safetensors, write_json, write_safetensors
from mechscope.models.lean import Hook, LeanModel

TASKS = ("reverse", "proportion")
TRUTHS = ("zero", "resample", "resample_shuffled")
MAX_SEQ_LEN = 5
USED_TOL = 1e-3
ACDC_SHUFFLE_SEED = 49  # TLACDCExperiment.setup_corrupted_cache: shuffle_tensor(z[0], seed=49)
PAIR_BATCH = 4096  # (x, x') pairs per runner when deriving a resample truth
# ACDC's search prompts for a program (tracr_eval.acdc_prompts): 50 inputs, corrupted by a
# permutation of them without fixed points
DEFAULT_SEARCH: dict[str, Any] = {"n": 50, "derangement": True}


class TracrModel(LeanModel):
    """LeanModel with bidirectional attention (every position attends to all)."""

    causal = False


# -- compiling and converting ---------------------------------------------------------------------
def _rasp() -> Any:
    try:
        from tracr.rasp import rasp
    except ImportError as e:  # pragma: no cover - depends on the extra
        raise CircuitError(
            "tracr is not installed: pip install 'mechscope[tracr]' (tracr-pypi)"
        ) from e
    return rasp


def preset_program(name: str) -> tuple[Any, set[Any]]:
    """(RASP program, vocab) of a preset task (ACDC's tracr tasks)."""
    rasp = _rasp()
    from tracr.compiler.lib import make_frac_prevs, make_length

    if name == "reverse":
        length = make_length()
        opp = length - rasp.indices - 1
        flip = rasp.Select(rasp.indices, opp, rasp.Comparison.EQ)
        return rasp.Aggregate(flip, rasp.tokens), {1, 2, 3}
    if name == "proportion":
        return make_frac_prevs(rasp.tokens == "x"), {"w", "x", "y", "z"}
    raise CircuitError(f"Unknown tracr task {name!r}; choose one of {TASKS}.")


@dataclass
class CompiledProgram:
    """A RASP program compiled by tracr: model config, NativeModel-layout state dict, and info
    (input_encoding value -> id, residual_labels, output_labels, reference input/output)."""

    name: str
    config: dict[str, Any]
    state: dict[str, Tensor]
    info: dict[str, Any]

    def model(self) -> LeanModel:
        return lean_from_state(self.config, self.state)

    def encode(self, inputs: Sequence[Sequence[Any]]) -> Tensor:
        """Token ids [n, 1 + len] of input value sequences, BOS first (tracr's encoding)."""
        return encode(inputs, self.info["input_encoding"])


def compile_tracr(
    program: Any,
    vocab: set[Any],
    *,
    max_seq_len: int = MAX_SEQ_LEN,
    compiler_bos: str = "BOS",
    name: str = "program",
) -> CompiledProgram:
    """Compile any RASP `program` over `vocab` with tracr and convert it (no LayerNorm)."""
    _rasp()
    from tracr.compiler import compiling

    m = compiling.compile_rasp_to_model(
        program, vocab=vocab, max_seq_len=max_seq_len, compiler_bos=compiler_bos
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
        "n_ctx": max_seq_len + 1,
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
    reference = sorted(vocab, key=str)[:max_seq_len]
    info = {
        "input_encoding": {str(k): v for k, v in m.input_encoder.encoding_map.items()},
        "residual_labels": labels,
        "output_labels": out_labels,
        "reference_inputs": [reference],
        "reference_outputs": [_decoded(m.apply([compiler_bos, *reference]).decoded)],
    }
    return CompiledProgram(name, config, state, info)


def _decoded(xs: list[Any]) -> list[Any]:
    return [x if isinstance(x, str) else float(x) for x in xs]


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


# -- inputs ----------------------------------------------------------------------------------------
def encode(inputs: Sequence[Sequence[Any]], encoding: dict[str, int]) -> Tensor:
    """Token ids [n, 1 + len] of input value sequences (all of one length), BOS first."""
    if not inputs or len({len(xs) for xs in inputs}) != 1:
        raise CircuitError("give one or more input sequences, all of the same length")
    bad = sorted({str(x) for xs in inputs for x in xs} - set(encoding))
    if bad:
        raise CircuitError(f"input values {bad} are not in the program's vocab {list(encoding)}")
    return torch.tensor([[encoding["BOS"], *[encoding[str(x)] for x in xs]] for xs in inputs])


def preset_tokens(name: str, encoding: dict[str, int]) -> Tensor:
    """The preset's inputs as ACDC builds them (`acdc/tracr_task/utils.py`), every one of them:
    reverse [6, 4] (BOS, then a permutation of 1 2 3); proportion [256, 4] (ids 0..3, no BOS)."""
    if name == "reverse":
        return encode(list(itertools.permutations([1, 2, 3])), encoding)
    if name == "proportion":
        return torch.tensor(list(itertools.product(range(4), repeat=4)))
    raise CircuitError(f"Unknown tracr task {name!r}; choose one of {TASKS}.")


def shuffle_positions(n_pos: int) -> dict[str, Hook]:
    """ACDC's tracr corruption: hooks permuting the positional embeddings of the corrupted run
    (every row the same permutation, torch.randperm(n_pos) after seeding 49)."""
    perm = torch.randperm(n_pos, generator=torch.Generator().manual_seed(ACDC_SHUFFLE_SEED))
    return {"hook_pos_embed": lambda z: z[:, perm.to(z.device)]}


def tracr_metric(model: LeanModel, tokens: Tensor) -> CircuitMetric:
    """ACDC's tracr metric: mean squared error to the model's outputs at positions 1.."""
    positions = tuple(range(1, tokens.shape[1]))
    with torch.no_grad():
        ref = model(tokens, logit_pos=positions)
    return l2_metric(ref, positions)


# -- the truth -------------------------------------------------------------------------------------
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


def _max_change(runner: CircuitRunner, adds: list[int]) -> Tensor:
    """[len(adds)]: the largest output change, over prompts and positions, of removing each
    edge alone."""
    masks = torch.ones(len(adds) + 1, len(runner.graph.edges), dtype=torch.bool)
    for row, i in enumerate(adds):
        masks[row + 1, i] = False
    out = runner.logits(masks)  # [n, B, pos, out]
    return (out[1:] - out[:1]).abs().flatten(1).amax(1)


def _adds(graph: Graph, structural: Tensor) -> list[int]:
    return [i for i in structural.nonzero().flatten().tolist() if graph.edges[i].kind == "add"]


def used_edges(runner: CircuitRunner, structural: Tensor, tol: float = USED_TOL) -> Tensor:
    """Structural edges whose removal alone changes some output by more than tol (logits at
    the runner's positions), with their q/k/v computation edges."""
    g = runner.graph
    adds = _adds(g, structural)
    change = _max_change(runner, adds)
    mask = torch.zeros(len(g.edges), dtype=torch.bool)
    mask[adds] = change > tol
    return _with_dc(g, mask)


def derive_truth(
    model: LeanModel,
    graph: Graph,
    tokens: Tensor,
    structural: Tensor,
    truth: str,
    tol: float = USED_TOL,
) -> Tensor:
    """The truth [n_edges] under `truth` (one of TRUTHS, see the module docstring) on the inputs
    `tokens` [n, pos]: every ordered pair of inputs for the resample truths (n^2 pairs)."""
    if truth not in TRUTHS:
        raise CircuitError(f"Unknown truth {truth!r}; choose one of {TRUTHS}.")
    positions = tuple(range(1, tokens.shape[1]))  # the first position outputs nothing
    if truth == "zero":
        runner = CircuitRunner(model, graph, tokens, None, "zero", positions)
        return used_edges(runner, structural, tol)
    hooks = shuffle_positions(tokens.shape[1]) if truth == "resample_shuffled" else None
    n = tokens.shape[0]
    adds = _adds(graph, structural)
    change = torch.zeros(len(adds))
    per = max(1, PAIR_BATCH // n)  # shifts per runner: corrupted row i - k for clean row i
    for k0 in range(0, n, per):
        shifts = range(k0, min(n, k0 + per))
        clean = tokens.repeat(len(shifts), 1)
        corrupt = torch.cat([tokens.roll(k, 0) for k in shifts])
        runner = CircuitRunner(model, graph, clean, corrupt, "resample", positions, hooks)
        change = torch.maximum(change, _max_change(runner, adds))
    mask = torch.zeros(len(graph.edges), dtype=torch.bool)
    mask[adds] = change > tol
    return _with_dc(graph, mask)


# -- tasks -----------------------------------------------------------------------------------------
@dataclass
class TracrTask:
    """A compiled program with its inputs, L2 metric and truths (masks over `graph`'s edges).

    tokens: [n, pos] every input the truths range over; truths: TRUTHS -> mask [n_edges];
    structural: the program's dataflow edges; search: how ACDC's runs draw prompts from tokens
    (`{"n": prompts or None for all, "derangement": corrupted rows never their own}`).
    """

    name: str
    model: LeanModel
    graph: Graph
    tokens: Tensor
    structural: Tensor
    truths: dict[str, Tensor]
    info: dict[str, Any]
    search: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_SEARCH))

    @property
    def truth(self) -> Tensor:
        """The zero-ablation truth (ACDC's convention)."""
        return self.truths["zero"]

    @property
    def metric(self) -> CircuitMetric:
        """L2 to the model's outputs on every input (positions 1..)."""
        return tracr_metric(self.model, self.tokens)

    def edge_names(self, mask: Tensor) -> list[str]:
        return [e.name for e, t in zip(self.graph.edges, mask.tolist(), strict=True) if t]


def graph_of(config: dict[str, Any]) -> Graph:
    """ACDC's tracr graph of a compiled model: token and positional embeddings separate."""
    return Graph(config["n_layers"], config["n_heads"], True, split_input=True)


def task_from(
    compiled: CompiledProgram,
    tokens: Tensor,
    search: dict[str, Any] | None = None,
    tol: float = USED_TOL,
) -> TracrTask:
    """A TracrTask of a compiled program on the inputs `tokens` [n, pos], its truths derived."""
    if tokens.ndim != 2 or tokens.shape[1] < 2 or tokens.shape[1] > compiled.config["n_ctx"]:
        raise CircuitError(
            f"tokens must be [n, pos] with 2 <= pos <= {compiled.config['n_ctx']} (BOS and the "
            f"program's max_seq_len), got {tuple(tokens.shape)}"
        )
    model = compiled.model()
    graph = graph_of(compiled.config)
    structural = structural_edges(graph, compiled.state)
    truths = {t: derive_truth(model, graph, tokens, structural, t, tol) for t in TRUTHS}
    info = {**compiled.info, "used_tolerance": tol}
    return TracrTask(
        compiled.name,
        model,
        graph,
        tokens,
        structural,
        truths,
        info,
        search or dict(DEFAULT_SEARCH),
    )


def tracr_task(
    program: Any,
    vocab: set[Any],
    inputs: Sequence[Sequence[Any]],
    *,
    max_seq_len: int = MAX_SEQ_LEN,
    compiler_bos: str = "BOS",
    name: str = "program",
    search: dict[str, Any] | None = None,
) -> TracrTask:
    """Compile any RASP `program` over `vocab` and derive its truths on `inputs` (value
    sequences of one length <= max_seq_len, without BOS). Needs tracr (jax: seconds to import).

    >>> from tracr.rasp import rasp
    >>> prog = rasp.categorical(rasp.Aggregate(
    ...     rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.EQ), rasp.tokens))
    >>> task = tracr_task(prog, {"a", "b"}, itertools.product("ab", repeat=3), max_seq_len=3)
    >>> task.edge_names(task.truths["resample"])
    """
    compiled = compile_tracr(
        program, vocab, max_seq_len=max_seq_len, compiler_bos=compiler_bos, name=name
    )
    return task_from(compiled, compiled.encode([list(xs) for xs in inputs]), search)


# -- the bundle ------------------------------------------------------------------------------------
PRESET_SEARCH: dict[str, dict[str, Any]] = {
    # ACDC's prompts: reverse all 6, corrupted by a permutation without fixed points (get_perm);
    # proportion 50 validation rows, corrupted by a permutation of them (torch.randperm)
    "reverse": {"n": None, "derangement": True},
    "proportion": {"n": 50, "derangement": False},
}


def save_tracr(task: TracrTask, compiled: CompiledProgram, folder: Path) -> Path:
    """Write <folder>/{config.json, model.safetensors, truth.json} (load with `load_tracr`)."""
    write_json(folder / "config.json", compiled.config)
    write_safetensors(folder / "model.safetensors", compiled.state)
    info = {
        **task.info,
        "task": task.name,
        "tokens": task.tokens.tolist(),
        "search": task.search,
        "structural_edges": task.edge_names(task.structural),
        "true_edges": {t: task.edge_names(m) for t, m in task.truths.items()},
    }
    write_json(folder / "truth.json", info)
    return folder


def build_tracr(out: Path = TRACR_DIR) -> dict[str, Path]:
    """Compile both presets and write <out>/<name>/ (see save_tracr)."""
    written = {}
    for name in TASKS:
        program, vocab = preset_program(name)
        compiled = compile_tracr(program, vocab, name=name)
        tokens = preset_tokens(name, compiled.info["input_encoding"])
        task = task_from(compiled, tokens, PRESET_SEARCH[name])
        written[name] = save_tracr(task, compiled, out / name)
    return written


def load_tracr(name: str | Path, folder: Path = TRACR_DIR) -> TracrTask:
    """A bundled preset ("reverse", "proportion") or a folder written by save_tracr: model,
    graph (split embeddings), inputs, truths. Needs no tracr."""
    path = Path(name) if Path(name).is_dir() else folder / str(name)
    if not path.is_dir() and str(name) not in TASKS:
        raise CircuitError(
            f"Unknown tracr task {name!r}; choose one of {TASKS} or a folder written by save_tracr."
        )
    if not (path / "model.safetensors").exists():
        raise CircuitError(f"no tracr model at {path}; rebuild with build_tracr() (needs tracr)")
    remake = "Rebuild it with build_tracr() (needs tracr)"
    config = read_json(path / "config.json", CircuitError, remake)
    info = read_json(path / "truth.json", CircuitError, remake)
    state = read_safetensors(path / "model.safetensors", CircuitError, remake, finite=True)
    graph = graph_of(config)
    truths = {t: graph.mask(names) for t, names in info.pop("true_edges").items()}
    task, tokens, search = info.pop("task"), info.pop("tokens"), info.pop("search")
    structural = graph.mask(info.pop("structural_edges"))
    model = lean_from_state(config, state)
    return TracrTask(task, model, graph, torch.tensor(tokens), structural, truths, info, search)
