"""Per-layer transcoders: the MLP's input to the MLP's output through a sparse code.

A transcoder of layer l reads the MLP's input x = norm(hook_mlp_in) (TransformerLens's
`blocks.l.ln2.hook_normalized` on the folded models `LeanModel` runs) and predicts the MLP's
output y (`blocks.l.hook_mlp_out`):
    codes = act(x @ W_enc + b_enc)            (no pre-encoder bias: apply_b_dec_to_input=False)
    y_hat = codes @ W_dec + b_dec [+ x @ W_skip.T]
Dunefsky, Chlenski & Nanda 2024 (ReLU, MSE + L1); the skip term of Paulo, Shabalin & Belrose 2025
(W_skip [d_out, d_in], starting at 0). Trained with the SAE trainer's pieces (local MSE on the MLP
output + lambda * L1 / d_in, the same Adam schedule, decoder rows at unit norm).

Files: SAELens's transcoder folders (cfg.json architecture "transcoder" / "skip_transcoder" /
"jumprelu_transcoder" / "jumprelu_skip_transcoder", `d_out`, metadata hook_name and
hook_name_out) and circuit-tracer's transcoder sets (config.yaml + layer_{l}.safetensors with
W_enc [d_tc, d_model]).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from mechscope.data.batches import source_batches
from mechscope.errors import SAEError
from mechscope.files import read_json, read_safetensors, write_json, write_safetensors, write_text
from mechscope.metrics import kl_div
from mechscope.models.lean import Hook, LeanModel, as_lean
from mechscope.progress import progress_bar
from mechscope.sae.activations import collect_many, keep_mask, special_ids
from mechscope.sae.config import Architecture, SAEConfig, TrainConfig
from mechscope.sae.evaluate import _ce
from mechscope.sae.losses import local_loss
from mechscope.sae.model import SparseAutoencoder
from mechscope.sae.saelens_format import _DTYPES, CFG_FILE, WEIGHTS_FILE, saelens_cfg
from mechscope.sae.train import TrainResult, lr_at, sparsity_coeff_at

INPUT_HOOK = "blocks.{layer}.ln2.hook_normalized"
OUTPUT_HOOK = "blocks.{layer}.hook_mlp_out"
_LAYER = re.compile(r"blocks\.(\d+)\.ln2\.hook_normalized$")


def layer_of(hook_name: str) -> int:
    """The layer of a transcoder input hook `blocks.{l}.ln2.hook_normalized`; SAEError else."""
    m = _LAYER.match(hook_name)
    if m is None:
        raise SAEError(
            f"a transcoder reads the MLP input 'blocks.{{l}}.ln2.hook_normalized', got "
            f"{hook_name!r}"
        )
    return int(m.group(1))


class Transcoder(SparseAutoencoder):
    """A transcoder of one layer's MLP: input [..., d_in] -> output [..., d_in] (d_out = d_in).

    cfg.hook_name is the input hook `blocks.{l}.ln2.hook_normalized`; architecture "standard"
    (ReLU) or "jumprelu" (loaded); skip=True adds the linear skip term W_skip [d_out, d_in].
    """

    W_skip: nn.Parameter | None

    def __init__(self, cfg: SAEConfig, skip: bool = False, seed: int = 0) -> None:
        if cfg.apply_b_dec_to_input:
            raise SAEError("a transcoder's b_dec is an output bias: apply_b_dec_to_input=False")
        if cfg.architecture == "topk":
            raise SAEError("transcoders here are ReLU or JumpReLU (SAELens has no TopK transcoder)")
        layer_of(cfg.hook_name)
        super().__init__(cfg, seed)
        if skip:
            self.W_skip = nn.Parameter(torch.zeros(cfg.d_in, cfg.d_in))
        else:
            self.register_parameter("W_skip", None)

    @property
    def layer(self) -> int:
        return layer_of(self.cfg.hook_name)

    @property
    def output_hook(self) -> str:
        return OUTPUT_HOOK.format(layer=self.layer)

    def skip(self, x: Tensor) -> Tensor:
        """The skip term [..., d_out] of inputs x [..., d_in] (zeros without W_skip)."""
        if self.W_skip is None:
            return torch.zeros_like(x, dtype=self.W_dec.dtype)
        return x.to(self.W_skip.dtype) @ self.W_skip.T

    def forward_with_codes(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(predicted MLP output [..., d_in], codes [..., d_sae]) of MLP inputs x [..., d_in]."""
        codes = self.encode(x)
        return self.decode(codes) + self.skip(x.to(self.W_dec.dtype)), codes

    def extra_repr(self) -> str:
        return super().extra_repr() + (", skip" if self.W_skip is not None else "")


# -- the MLP's input and output ------------------------------------------------------------------
def mlp_input(lean: LeanModel, layer: int, mlp_in: Tensor) -> Tensor:
    """What MLP `layer` reads [..., d_model]: its norm applied to hook_mlp_in [..., d_model]."""
    w = lean.layers[layer]
    return lean.pre_norm(mlp_in.to(w.device), w.ln2).to(mlp_in.device)


def check_transcoder_fits(lean: LeanModel, tc: Transcoder) -> None:
    """SAEError unless `tc` can replace an MLP of `lean` (layer exists, has an MLP, widths)."""
    l, d = tc.layer, int(lean.W_E.shape[1])
    if lean.attn_only or l >= lean.n_layers:
        raise SAEError(
            f"transcoder for layer {l} does not fit: the model has {lean.n_layers} layers"
            + (" and no MLPs" if lean.attn_only else "")
        )
    if tc.d_in != d:
        raise SAEError(f"transcoder of layer {l} has d_in={tc.d_in}, the model's d_model is {d}")


def mlp_io(
    lean: LeanModel, tokens: Tensor, layers: Sequence[int]
) -> dict[int, tuple[Tensor, Tensor]]:
    """(MLP input, MLP output), each [batch, pos, d_model], of each layer in one forward."""
    names = [f"blocks.{l}.hook_mlp_{s}" for l in layers for s in ("in", "out")]
    acts = collect_many(lean, tokens, names)
    return {
        l: (mlp_input(lean, l, acts[f"blocks.{l}.hook_mlp_in"]), acts[f"blocks.{l}.hook_mlp_out"])
        for l in layers
    }


def replace_hooks(
    lean: LeanModel, transcoders: Sequence[Transcoder], keep: Tensor
) -> dict[str, Hook]:
    """Hooks replacing each transcoder's MLP output by its prediction where keep [batch, pos]
    (special positions keep the MLP's output), from the input the replaced model gives it."""
    hooks: dict[str, Hook] = {}
    for tc in transcoders:
        l, seen = tc.layer, dict[str, Tensor]()

        def grab(x: Tensor, seen: dict[str, Tensor] = seen) -> None:
            seen["x"] = x

        def swap(
            y: Tensor, seen: dict[str, Tensor] = seen, l: int = l, tc: Transcoder = tc
        ) -> Tensor:
            y_hat = tc(mlp_input(lean, l, seen["x"]).to(tc.W_dec.device)).to(y)
            return torch.where(keep.to(y.device)[..., None], y_hat, y)

        hooks[f"blocks.{l}.hook_mlp_in"] = grab
        hooks[f"blocks.{l}.hook_mlp_out"] = swap
    return hooks


# -- training -------------------------------------------------------------------------------------
def train_transcoder(
    cfg: TrainConfig,
    model: Any,
    skip: bool = False,
    tokens: Iterable[Tensor] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a transcoder of layer l (cfg.hook_name = `blocks.l.ln2.hook_normalized`) with the
    local loss MSE(y_hat, y) + lambda * sparsity on the MLP output y, trained as the SAE trainer
    trains SAEs (decoder-norm-weighted L1 / d_in, lambda warm-up, gradient clip grad_clip / d_in,
    decoder norms free and folded into the encoder at the end); model: a loaded bridge or
    LeanModel.

    cfg: loss "local" and architecture "standard" only; expansion, steps, batch, lr schedule,
        seed and data source as for SAEs. tokens: batches [batch, n_ctx] (default: cfg's stream).
    """
    if cfg.loss != "local" or cfg.architecture != "standard":
        raise SAEError(
            f"transcoders train with loss 'local' and architecture 'standard' here, got "
            f"{cfg.loss!r} / {cfg.architecture!r}"
        )
    t0 = time.time()
    lean = as_lean(model)
    d, specials, device = int(lean.W_E.shape[1]), special_ids(lean), lean.W_E.device
    sae_cfg = SAEConfig(
        d_in=d,
        d_sae=cfg.expansion * d,
        hook_name=cfg.hook_name,
        model_name=cfg.model,
        apply_b_dec_to_input=False,
        extra={"training": cfg.to_dict(), "skip": skip},
    )
    tc = Transcoder(sae_cfg, skip=skip, seed=cfg.seed).to(device)
    check_transcoder_fits(lean, tc)
    l = tc.layer
    opt = torch.optim.Adam(tc.parameters(), lr=cfg.lr)
    if tokens is None:
        tokens = source_batches(
            lean, cfg.batch_size, cfg.seed, cfg.mixture, cfg.dataset, cfg.dataset_column
        )
    history: list[dict[str, float]] = []
    batches = iter(tokens)
    with progress_bar(progress) as bar:
        task = bar.add_task(f"transcoder layer {l}", total=cfg.n_steps, stats="")
        for step in range(cfg.n_steps):
            try:
                toks = next(batches).to(device)
            except StopIteration:
                raise SAEError(
                    f"the token batches ran out after {step} of {cfg.n_steps} steps"
                ) from None
            keep = keep_mask(toks, specials)
            x_all, y_all = mlp_io(lean, toks, [l])[l]
            x, y = x_all[keep], y_all[keep]
            if step == 0:
                tc.b_dec.data.copy_(y.mean(0))
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, step)
            y_hat, codes = tc.forward_with_codes(x)
            coeff = sparsity_coeff_at(cfg, step)
            parts = local_loss(y, y_hat, codes, tc.W_dec, coeff, use_l1=True)
            opt.zero_grad(set_to_none=True)
            parts.total.backward()
            torch.nn.utils.clip_grad_norm_(tc.parameters(), cfg.grad_clip / tc.cfg.d_in)
            opt.step()
            tc.update_firing_(codes.detach())
            loss = float(parts.total.detach())
            if not math.isfinite(loss):
                raise SAEError(f"loss became {loss} at step {step}; lower lr or sparsity_coeff")
            l0 = float((codes != 0).sum(-1).float().mean())
            dead = float(tc.dead_mask(cfg.dead_window).float().mean())
            terms = {k: float(v) for k, v in parts.terms.items()}
            history.append(
                {"step": step, "loss": loss, "l0": l0, "dead_frac": dead, "lr": lr_at(cfg, step)}
                | terms
            )
            bar.update(task, advance=1, stats=f"loss {loss:.4g}  L0 {l0:.1f}  dead {dead:.1%}")
    tc.fold_decoder_norms_()  # unit decoder rows, the same function (as the SAE trainer does)
    tc.eval()
    return TrainResult(tc, cfg, history, time.time() - t0)


# -- evaluation -----------------------------------------------------------------------------------
@dataclass
class TranscoderEval:
    """Transcoders of several layers evaluated together, over the non-special tokens.

    layers: per transcoder {layer, l0, explained_variance (of the MLP output), mse, dead_frac},
        each measured on the real model's MLP inputs.
    ce_*, kl_*: next-token CE of the real model (orig), with every listed MLP replaced by its
        transcoder at once (replaced) and with those MLP outputs zeroed (zero_abl);
        ce_recovered = (ce_zero_abl - ce_replaced) / (ce_zero_abl - ce_orig); KL(orig || .).
    """

    n_tokens: int
    layers: list[dict[str, float]]
    ce_orig: float
    ce_replaced: float
    ce_zero_abl: float
    ce_recovered: float
    kl_replaced: float
    kl_zero_abl: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def evaluate_transcoders(
    model: Any, transcoders: Sequence[Transcoder], tokens: Iterable[Tensor]
) -> TranscoderEval:
    """Evaluate `transcoders` (one per layer, on the model's device) over token batches."""
    lean = as_lean(model)
    for tc in transcoders:
        check_transcoder_fits(lean, tc)
    layers = [tc.layer for tc in transcoders]
    if len(set(layers)) != len(layers):
        raise SAEError(f"one transcoder per layer, got layers {layers}")
    specials = special_ids(lean)
    sums = {l: {"sq_res": 0.0, "sq": 0.0, "l0": 0.0} for l in layers}
    sum_y = {l: torch.zeros(lean.W_E.shape[1], dtype=torch.float64) for l in layers}
    fires = {
        l: torch.zeros(tc.d_sae, dtype=torch.float64)
        for l, tc in zip(layers, transcoders, strict=True)
    }
    ce: dict[str, list[Tensor]] = {"orig": [], "rep": [], "abl": []}
    kl: dict[str, list[Tensor]] = {"rep": [], "abl": []}
    n = 0
    for batch in tokens:
        toks = batch.to(lean.W_E.device)
        keep = keep_mask(toks, specials)
        io = mlp_io(lean, toks, layers)
        for l, tc in zip(layers, transcoders, strict=True):
            x, y = (t[keep].to(tc.W_dec.device) for t in io[l])
            y_hat, codes = tc.forward_with_codes(x)
            sums[l]["sq_res"] += float((y.double() - y_hat.double()).pow(2).sum())
            sums[l]["sq"] += float(y.double().pow(2).sum())
            sums[l]["l0"] += float((codes != 0).sum())
            sum_y[l] += y.double().sum(0).cpu()
            fires[l] += (codes != 0).sum(0).double().cpu()
        n += int(keep.sum())
        orig = lean.forward(toks)
        rep = lean.forward(toks, hooks=replace_hooks(lean, transcoders, keep))
        zero = {
            f"blocks.{l}.hook_mlp_out": lambda y, k=keep: torch.where(k[..., None], 0.0, y)
            for l in layers
        }
        abl = lean.forward(toks, hooks=zero)
        for key, logits in (("orig", orig), ("rep", rep), ("abl", abl)):
            ce[key].append(_ce(logits, toks, keep))
        kl["rep"].append(kl_div(orig, rep, pos=None)[keep])
        kl["abl"].append(kl_div(orig, abl, pos=None)[keep])
    if n == 0:
        raise SAEError("no (non-special) tokens to evaluate the transcoders on")
    rows = []
    for l in layers:
        mse = sums[l]["sq_res"] / n
        var = sums[l]["sq"] / n - float((sum_y[l] / n).pow(2).sum())
        rows.append(
            {
                "layer": l,
                "l0": sums[l]["l0"] / n,
                "mse": mse,
                "explained_variance": 1.0 - mse / var if var > 1e-10 else float("nan"),
                "dead_frac": float((fires[l] == 0).double().mean()),
            }
        )
    ce_m = {k: float(torch.cat(v).mean()) for k, v in ce.items()}
    kl_m = {k: float(torch.cat(v).mean()) for k, v in kl.items()}
    return TranscoderEval(
        n_tokens=n,
        layers=rows,
        ce_orig=ce_m["orig"],
        ce_replaced=ce_m["rep"],
        ce_zero_abl=ce_m["abl"],
        ce_recovered=(ce_m["abl"] - ce_m["rep"]) / (ce_m["abl"] - ce_m["orig"]),
        kl_replaced=kl_m["rep"],
        kl_zero_abl=kl_m["abl"],
    )


# -- SAELens's transcoder format ------------------------------------------------------------------
def _saelens_architecture(tc: Transcoder) -> str:
    base = "jumprelu_" if tc.cfg.architecture == "jumprelu" else ""
    return base + ("skip_transcoder" if tc.W_skip is not None else "transcoder")


def save_transcoder(
    tc: Transcoder, path: str | Path, dtype: str = "float32", metadata: dict[str, Any] | None = None
) -> Path:
    """Write `tc` to folder `path` as SAELens 6.x writes a transcoder; returns the folder."""
    if dtype not in _DTYPES:
        raise SAEError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    weights = {
        n: p.detach().to(device="cpu", dtype=_DTYPES[dtype]).contiguous()
        for n, p in tc.named_parameters()
    }
    base = saelens_cfg(tc.cfg, dtype, metadata)
    meta = base.pop("metadata")
    hooks = {"hook_name_out": tc.output_hook, "hook_head_index_out": None}
    cfg = {
        **{k: base[k] for k in ("d_in", "d_sae")},
        "d_out": tc.cfg.d_in,
        **{k: v for k, v in base.items() if k not in ("d_in", "d_sae", "architecture")},
        "metadata": _with_outputs(meta, hooks),
        "architecture": _saelens_architecture(tc),
    }
    folder = Path(path)
    write_safetensors(folder / WEIGHTS_FILE, weights)
    write_json(folder / CFG_FILE, cfg, indent=2)  # last: a folder with cfg.json is complete
    return folder


def _with_outputs(meta: dict[str, Any], outs: dict[str, Any]) -> dict[str, Any]:
    """meta with each `<key>_out` of outs right after `<key>` (SAELens's key order)."""
    out: dict[str, Any] = {}
    for k, v in meta.items():
        out[k] = v
        if f"{k}_out" in outs:
            out[f"{k}_out"] = outs[f"{k}_out"]
    return out


_REMAKE = (
    "Retrain it (`mechscope sae train --kind transcoder`) or rebuild the bundled set "
    "(`mechscope sae build-transcoders`)"
)


def _build(
    d_in: int, d_sae: int, hook: str, model: str, weights: dict[str, Tensor], extra: dict[str, Any]
) -> Transcoder:
    arch = cast(Architecture, "jumprelu" if "threshold" in weights else "standard")
    cfg = SAEConfig(d_in, d_sae, arch, None, hook, model, False, extra)
    tc = Transcoder(cfg, skip="W_skip" in weights)
    shapes = {n: tuple(p.shape) for n, p in tc.named_parameters()}
    got = {n: tuple(t.shape) for n, t in weights.items()}
    if got != shapes:
        raise SAEError(f"transcoder weights {got} do not match the expected {shapes}")
    with torch.no_grad():
        for n, p in tc.named_parameters():
            p.copy_(weights[n].to(torch.float32))
    return tc.eval()


def load_transcoder(path: str | Path, dtype: torch.dtype = torch.float32) -> Transcoder:
    """Read a transcoder from a SAELens-format folder (cfg.json + sae_weights.safetensors)."""
    folder = Path(path)
    for f in (CFG_FILE, WEIGHTS_FILE):
        if not (folder / f).exists():
            raise SAEError(f"{folder} has no {f}: not a SAELens-format transcoder folder")
    cfg = read_json(folder / CFG_FILE, SAEError, _REMAKE)
    arch = cfg.get("architecture", "")
    if not str(arch).endswith("transcoder"):
        raise SAEError(f"{folder / CFG_FILE}: architecture {arch!r} is not a transcoder")
    if int(cfg.get("d_out", cfg["d_in"])) != int(cfg["d_in"]):
        raise SAEError(f"{folder}: d_out != d_in; only MLP-to-MLP transcoders are supported")
    meta = cfg.get("metadata") or {}
    weights = read_safetensors(folder / WEIGHTS_FILE, SAEError, _REMAKE, finite=True)
    tc = _build(
        int(cfg["d_in"]),
        int(cfg["d_sae"]),
        str(meta.get("hook_name") or ""),
        str(meta.get("model_name") or ""),
        weights,
        dict(meta.get("mechscope") or {}),
    )
    return tc.to(dtype)


# -- circuit-tracer's transcoder sets -------------------------------------------------------------
def save_circuit_tracer(
    transcoders: Sequence[Transcoder], path: str | Path, model_name: str = ""
) -> Path:
    """Write a transcoder set as circuit-tracer reads it: config.yaml + layer_{l}.safetensors
    (W_enc [d_tc, d_model], W_dec, b_enc, b_dec, optional W_skip [d_out, d_in] and
    activation_function.threshold). One transcoder per layer 0..L-1, in order."""
    layers = [tc.layer for tc in transcoders]
    if layers != list(range(len(layers))):
        raise SAEError(f"circuit-tracer sets hold layers 0..L-1 in order, got {layers}")
    for tc in transcoders:
        if tc.cfg.architecture == "jumprelu" and bool((tc.threshold < 0).any()):
            raise SAEError(
                f"layer {tc.layer}: negative JumpReLU thresholds mean different functions in "
                "SAELens (ReLU(z)*[z>t]) and circuit-tracer (z*[z>t])"
            )
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    for tc in transcoders:
        w = {n: p.detach().cpu().float() for n, p in tc.named_parameters()}
        out = {"W_enc": w["W_enc"].T, "W_dec": w["W_dec"], "b_enc": w["b_enc"], "b_dec": w["b_dec"]}
        if "W_skip" in w:
            out["W_skip"] = w["W_skip"]
        if "threshold" in w:
            out["activation_function.threshold"] = w["threshold"]
        out = {k: v.contiguous() for k, v in out.items()}
        write_safetensors(folder / f"layer_{tc.layer}.safetensors", out)
    name = model_name or transcoders[0].cfg.model_name
    text = (
        "model_kind: transcoder_set\n"
        f"model_name: {json.dumps(name)}\n"
        "feature_input_hook: ln2.hook_normalized\n"
        "feature_output_hook: hook_mlp_out\n"
    )
    write_text(folder / "config.yaml", text)
    return folder


def load_circuit_tracer(path: str | Path) -> list[Transcoder]:
    """Read a circuit-tracer transcoder set (config.yaml + layer_{l}.safetensors) that reads
    `ln2.hook_normalized` and writes `hook_mlp_out`."""
    import yaml

    folder = Path(path)
    if not (folder / "config.yaml").exists():
        raise SAEError(f"{folder} has no config.yaml: not a circuit-tracer transcoder set")
    cfg = yaml.safe_load((folder / "config.yaml").read_text()) or {}
    hooks = (cfg.get("feature_input_hook"), cfg.get("feature_output_hook"))
    if cfg.get("model_kind") != "transcoder_set" or hooks != (
        "ln2.hook_normalized",
        "hook_mlp_out",
    ):
        raise SAEError(
            f"{folder / 'config.yaml'}: only per-layer sets from ln2.hook_normalized to "
            f"hook_mlp_out are supported, got {cfg.get('model_kind')!r} {hooks}"
        )
    files = sorted(folder.glob("layer_*.safetensors"), key=lambda p: int(p.stem.split("_")[1]))
    if not files or [int(p.stem.split("_")[1]) for p in files] != list(range(len(files))):
        raise SAEError(f"{folder} must hold layer_0.safetensors .. layer_{{L-1}}.safetensors")
    out = []
    for l, f in enumerate(files):
        w = read_safetensors(f, SAEError, _REMAKE, finite=True)
        if "activation_function.threshold" in w:
            w["threshold"] = w.pop("activation_function.threshold")
            if bool((w["threshold"] < 0).any()):
                raise SAEError(f"{f}: negative JumpReLU thresholds are not supported")
        w["W_enc"] = w["W_enc"].T.contiguous()
        d_sae, d_in = w["W_dec"].shape
        hook = INPUT_HOOK.format(layer=l)
        out.append(_build(d_in, d_sae, hook, str(cfg.get("model_name") or ""), w, {}))
    return out


# -- sets: one transcoder per layer ---------------------------------------------------------------
def load_transcoder_set(path: str | Path, dtype: torch.dtype = torch.float32) -> list[Transcoder]:
    """Transcoders of layers 0..L-1 from a circuit-tracer set (config.yaml) or a folder of
    SAELens transcoder folders (one per layer, as `train_transcoder_set` writes)."""
    folder = Path(path)
    if (folder / "config.yaml").exists():
        return [tc.to(dtype) for tc in load_circuit_tracer(folder)]
    subs = sorted(p.parent for p in folder.glob(f"*/{CFG_FILE}"))
    if not subs:
        raise SAEError(
            f"{folder} holds neither a circuit-tracer config.yaml nor SAELens transcoder folders"
        )
    tcs = sorted((load_transcoder(p, dtype) for p in subs), key=lambda t: t.layer)
    layers = [t.layer for t in tcs]
    if layers != list(range(len(tcs))):
        raise SAEError(f"{folder}: need one transcoder per layer 0..L-1, found layers {layers}")
    return tcs


def train_transcoder_set(
    cfg: TrainConfig,
    model: Any,
    layers: Sequence[int],
    out: str | Path,
    skip: bool = False,
    eval_tokens: Iterable[Tensor] = (),
    progress: bool = True,
    dtype: str = "float32",
) -> TranscoderEval | None:
    """Train one transcoder per layer (cfg's hook_name is replaced per layer), save each to
    OUT/<input hook>__transcoder (SAELens format) and, for all layers 0..L-1, the set in
    circuit-tracer's format to OUT/circuit-tracer; evaluate them together on eval_tokens
    (written to OUT/eval.json). Returns the evaluation (None without eval_tokens).

    dtype: of the SAELens weights; the trained weights are rounded to it first, so both
    formats and the evaluation hold the same values."""
    from dataclasses import replace

    if dtype not in _DTYPES:
        raise SAEError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    folder = Path(out)
    tcs = []
    for l in layers:
        lcfg = replace(cfg, hook_name=INPUT_HOOK.format(layer=l))
        tc = cast(Transcoder, train_transcoder(lcfg, model, skip=skip, progress=progress).sae)
        tc = tc.to(_DTYPES[dtype]).to(torch.float32)
        save_transcoder(tc, folder / f"{lcfg.hook_name}__transcoder", dtype=dtype)
        tcs.append(tc)
    if list(layers) == list(range(as_lean(model).n_layers)):
        save_circuit_tracer(tcs, folder / "circuit-tracer", cfg.model)
    batches = list(eval_tokens)
    if not batches:
        return None
    ev = evaluate_transcoders(model, tcs, batches)
    write_json(folder / "eval.json", ev.to_dict(), indent=2)
    return ev
