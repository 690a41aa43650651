"""`train_sae`: local, end-to-end and e2e+downstream SAE training, with checkpoint and resume.

Each step draws one token batch [batch_size, n_ctx] from a deterministic stream, runs the model
(`LeanModel`) and updates the SAE with Adam (linear warm-up, cosine decay to min_lr_frac * lr,
gradient clipping). Decoder norms are free during training (the L1 term is weighted by them, as in
SAELens); a trained ReLU SAE has them folded into its encoder, so its decoder rows have unit norm.
Metrics stay on the device: each history row holds the loss and its terms, every `log_every`-th
row also L0 and the dead fraction, and the rows are read back once per `log_every` steps. A
checkpoint holds the SAE, the optimiser state, the step and the history; resuming skips
the batches already used, so an interrupted run ends bit-identical to an uninterrupted one.

With an `ActivationStore` (`mechscope.sae.store`) the local loss trains from stored activations
without running the model: step i reads stored sequences [i * batch_size, (i + 1) * batch_size),
so a store written from the same token batches gives the same SAE as the live model.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from mechscope.data.batches import source_batches
from mechscope.errors import SAEError
from mechscope.files import read_torch, write_torch
from mechscope.models.lean import Hook, LeanModel, as_lean
from mechscope.progress import progress_bar
from mechscope.sae.activations import (
    collect,
    downstream_hooks,
    hook_width,
    keep_mask,
    special_ids,
    splice_hook,
)
from mechscope.sae.config import SAEConfig, TrainConfig
from mechscope.sae.losses import LossParts, e2e_loss, local_loss
from mechscope.sae.model import SparseAutoencoder, check_finite

if TYPE_CHECKING:
    from mechscope.sae.store import ActivationStore

CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainResult:
    """A trained SAE with its config and per-step history (loss, l0, dead_frac, lr, terms)."""

    sae: SparseAutoencoder
    config: TrainConfig
    history: list[dict[str, float]]
    seconds: float


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate at `step` (0-based): linear warm-up, then cosine to min_lr_frac * lr."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.n_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.min_lr_frac * cfg.lr
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * progress))


def sparsity_coeff_at(cfg: TrainConfig, step: int) -> float:
    """lambda at `step` (0-based): linear warm-up over round(sparsity_warmup_frac * n_steps)."""
    warm = round(cfg.sparsity_warmup_frac * cfg.n_steps)
    return cfg.sparsity_coeff * min(1.0, (step + 1) / warm) if warm > 1 else cfg.sparsity_coeff


def _capture(store: dict[str, Tensor], name: str) -> Hook:
    def hook(x: Tensor) -> None:
        store[name] = x

    return hook


def _step_loss(
    lean: LeanModel | None,
    sae: SparseAutoencoder,
    cfg: TrainConfig,
    tokens: Tensor | None,
    x: Tensor | None,
    specials: list[int],
    coeff: float,
) -> tuple[LossParts, Tensor]:
    """Loss of one batch and the codes [n_kept, d_sae] it produced.

    x: the hook's activations [n_kept, d_in] at the batch's non-special positions, for the local
    loss; tokens [batch, pos]: the batch, for the e2e losses (which run `lean`); coeff: lambda at
    this step.
    """
    use_l1 = cfg.architecture == "standard"
    if x is not None:
        x_hat, codes = sae.forward_with_codes(x)
        return local_loss(x, x_hat, codes, sae.W_dec, coeff, use_l1), codes
    assert lean is not None and tokens is not None, "the e2e losses run the model"
    keep = keep_mask(tokens, specials)
    ds_names = downstream_hooks(lean, cfg.hook_name) if cfg.loss == "e2e_ds" else []
    orig: dict[str, Tensor] = {}
    with torch.no_grad():
        hooks = {n: _capture(orig, n) for n in [cfg.hook_name, *ds_names]}
        orig_logits = lean.forward(tokens, hooks=hooks)
    check_finite(orig[cfg.hook_name], cfg.hook_name)
    new: dict[str, Tensor] = {}
    codes_out: list[Tensor] = []
    hooks = {n: _capture(new, n) for n in ds_names}
    hooks[cfg.hook_name] = splice_hook(sae, keep, codes_out)
    new_logits = lean.forward(tokens, hooks=hooks)
    codes = codes_out[0]
    parts = e2e_loss(
        orig_logits,
        new_logits,
        keep,
        codes,
        sae.W_dec,
        coeff,
        use_l1,
        kl_coeff=cfg.kl_coeff if cfg.loss == "e2e_ds" else 1.0,
        downstream=[(new[n], orig[n]) for n in ds_names],
        ds_coeff=cfg.ds_coeff,
    )
    return parts, codes


def _save_checkpoint(
    folder: Path,
    cfg: TrainConfig,
    step: int,
    sae: SparseAutoencoder,
    opt: torch.optim.Optimizer,
    history: list[dict[str, float]],
) -> None:
    state = {
        "config": cfg.to_dict(),
        "sae_config": sae.cfg.to_dict(),
        "step": step,
        "sae": sae.state_dict(),
        "optimizer": opt.state_dict(),
        "history": history,
    }
    write_torch(folder / CHECKPOINT, state)


def check_store(cfg: TrainConfig, store: ActivationStore) -> tuple[int, list[int]]:
    """d_in and special token ids of a run trained from `store`; SAEError unless it can."""
    if cfg.loss != "local":
        raise SAEError(
            f"loss {cfg.loss!r} runs the model on spliced activations; an activation store serves "
            "only the local loss (train e2e losses from the live model)"
        )
    if store.model != cfg.model:
        raise SAEError(
            f"the store at {store.path} holds activations of model {store.model!r}, "
            f"not {cfg.model!r}"
        )
    if cfg.hook_name not in store.hooks:
        raise SAEError(
            f"hook {cfg.hook_name!r} is not in the store at {store.path}; it holds "
            f"{sorted(store.hooks)}"
        )
    need = cfg.n_steps * cfg.batch_size
    if len(store) < need:
        raise SAEError(
            f"the store at {store.path} holds {len(store)} sequences ({store.n_tokens} tokens); "
            f"{cfg.n_steps} steps of {cfg.batch_size} sequences need {need} "
            f"({need * store.n_ctx} tokens): write a larger store or train fewer steps"
        )
    return store.hooks[cfg.hook_name], store.special_ids


Batch = tuple[Tensor | None, Tensor | None]
"""One step's input: (tokens [batch, n_ctx] for the e2e losses, else None; the hook's activations
[n_kept, d_in] at the non-special positions for the local loss, else None)."""


def _live_inputs(
    lean: LeanModel, cfg: TrainConfig, tokens: Iterable[Tensor], start: int, specials: list[int]
) -> Iterator[Batch]:
    """The inputs of each step from `start` (the batches before it are skipped)."""
    for toks in itertools.islice(tokens, start, None):
        toks = toks.to(lean.W_E.device)
        if cfg.loss != "local":
            yield toks, None
        else:
            acts = collect(lean, toks, cfg.hook_name, check=False)  # checked in the read-back
            yield None, acts[keep_mask(toks, specials)]


def _stored_inputs(
    store: ActivationStore, cfg: TrainConfig, start: int, specials: list[int], device: torch.device
) -> Iterator[Batch]:
    """The local loss's inputs of each step from `start`, read from `store`."""
    for toks, acts in store.batches(cfg.hook_name, cfg.batch_size, start=start * cfg.batch_size):
        toks = toks.to(device)
        yield None, acts.to(device)[keep_mask(toks, specials)]


def _read_back(
    pending: list[tuple[int, float, dict[str, Tensor]]], finite: list[Tensor], hook: str
) -> list[dict[str, float]]:
    """History rows of the pending steps, read from the device in one synchronisation; SAEError
    if the activations were not all finite (`finite`: a bool per local-loss step) or at the first
    non-finite loss."""
    if finite and not bool(torch.stack(finite).all()):
        raise SAEError(f"non-finite values (NaN/inf) in the activations at {hook}")
    names = [list(terms) for _, _, terms in pending]
    values = torch.stack([v.float() for _, _, terms in pending for v in terms.values()]).tolist()
    rows, i = [], 0
    for (step, lr, _), keys in zip(pending, names, strict=True):
        row: dict[str, float] = {"step": step, "lr": lr} | dict(
            zip(keys, values[i : i + len(keys)], strict=True)
        )
        i += len(keys)
        if not math.isfinite(row["loss"]):
            raise SAEError(f"loss became {row['loss']} at step {step}; lower lr or sparsity_coeff")
        rows.append(row)
    return rows


def train_sae(
    cfg: TrainConfig,
    model: Any = None,
    tokens: Iterable[Tensor] | None = None,
    checkpoint_dir: str | Path | None = None,
    stop_at: int | None = None,
    progress: bool = True,
    store: ActivationStore | None = None,
    activations: Iterable[Tensor] | None = None,
) -> TrainResult:
    """Train an SAE on `cfg.hook_name` of `model` as `cfg` says.

    model: a TransformerBridge or LeanModel (needed unless training from a store or activations);
        the SAE is trained on its device. With a store or activations, only its device is used
        (default CPU).
    tokens: token batches [batch, n_ctx] (default: `source_batches` of cfg: cfg.dataset, else
        the corpus stream, seeded with cfg.seed). Pass a fresh iterable of the same batches when
        resuming; the used ones are skipped.
    checkpoint_dir: if it holds a checkpoint of the same config, training resumes from it; a
        checkpoint is written every cfg.checkpoint_every steps and at the end.
    stop_at: stop after this many steps (as if interrupted), leaving a checkpoint.
    store: train the local loss from this activation store instead of running the model (its
        first n_steps * batch_size sequences, in order; d_in and special ids from its manifest).
    activations: train the local loss on these batches [n_tokens, d_in] of the hook's
        activations (special-token positions already left out), one per step, instead of running
        the model (cfg.batch_size is then unused). Pass a fresh iterable when resuming.
    """
    t0 = time.time()
    lean: LeanModel | None = None
    if sum(s is not None for s in (tokens, store, activations)) > 1:
        raise SAEError("pass at most one of tokens, store and activations")
    acts_iter: Iterator[Tensor] | None = None
    if activations is not None:
        if cfg.loss != "local":
            raise SAEError(f"loss {cfg.loss!r} runs the model; activations serve the local loss")
        acts_iter = iter(activations)
        first = next(acts_iter, None)
        if first is None or first.ndim != 2:
            raise SAEError("activations must yield batches [n_tokens, d_in]")
        acts_iter = itertools.chain([first], acts_iter)
        d_in, specials = int(first.shape[-1]), list[int]()
        device = as_lean(model).W_E.device if model is not None else torch.device("cpu")
    elif store is not None:
        d_in, specials = check_store(cfg, store)
        device = as_lean(model).W_E.device if model is not None else torch.device("cpu")
    else:
        if model is None:
            raise SAEError(
                f"train_sae needs the loaded model (mechscope.load_model({cfg.model!r})) unless "
                "it trains from an activation store"
            )
        lean = as_lean(model)
        d_in, specials, device = hook_width(lean, cfg.hook_name), special_ids(lean), lean.W_E.device
    sae_cfg = SAEConfig(
        d_in=d_in,
        d_sae=cfg.expansion * d_in,
        architecture=cfg.architecture,
        k=cfg.k,
        hook_name=cfg.hook_name,
        model_name=cfg.model,
        extra={"training": cfg.to_dict()},
    )
    sae = SparseAutoencoder(sae_cfg, seed=cfg.seed).to(device)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr)
    history: list[dict[str, float]] = []
    start = 0
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if folder is not None and (folder / CHECKPOINT).exists():
        remake = "Delete it to train from the start, or use another checkpoint_dir"
        state = read_torch(folder / CHECKPOINT, SAEError, remake, map_location=device)
        if TrainConfig.from_dict(state["config"]) != cfg:  # fields added later take defaults
            raise SAEError(
                f"{folder / CHECKPOINT} was written by a different config; use another "
                "checkpoint_dir or delete it"
            )
        sae.load_state_dict(state["sae"])
        opt.load_state_dict(state["optimizer"])
        start, history = int(state["step"]), list(state["history"])
    inputs: Iterator[Batch]
    if acts_iter is not None:
        inputs = ((None, x.to(device)) for x in itertools.islice(acts_iter, start, None))
    elif store is not None:
        inputs = _stored_inputs(store, cfg, start, specials, device)
    else:
        assert lean is not None
        if tokens is None:
            tokens = source_batches(
                lean, cfg.batch_size, cfg.seed, cfg.mixture, cfg.dataset, cfg.dataset_column
            )
        inputs = _live_inputs(lean, cfg, tokens, start, specials)
    end = cfg.n_steps if stop_at is None else min(stop_at, cfg.n_steps)
    pending: list[tuple[int, float, dict[str, Tensor]]] = []  # steps not yet read back
    finite: list[Tensor] = []  # whether each pending local-loss batch was all finite
    with progress_bar(progress) as bar:
        task = bar.add_task(f"SAE {cfg.loss} {cfg.hook_name}", total=cfg.n_steps, stats="")
        bar.update(task, completed=start)
        for step in range(start, end):
            try:
                toks, x = next(inputs)
            except StopIteration:
                raise SAEError(
                    f"the token batches ran out after {step} of {cfg.n_steps} steps; give more "
                    "data (or a stream with more epochs) or train fewer steps"
                ) from None
            if x is not None:
                finite.append(torch.isfinite(x).all())
            lr = lr_at(cfg, step)
            for group in opt.param_groups:
                group["lr"] = lr
            parts, codes = _step_loss(
                lean, sae, cfg, toks, x, specials, sparsity_coeff_at(cfg, step)
            )
            opt.zero_grad(set_to_none=True)
            parts.total.backward()
            torch.nn.utils.clip_grad_norm_(sae.parameters(), cfg.grad_clip / d_in)
            opt.step()
            codes = codes.detach()
            sae.update_firing_(codes, parts.code_sums)
            terms = {"loss": parts.total.detach()} | parts.terms
            done = step + 1
            if step % cfg.log_every == 0 or done == cfg.n_steps:
                terms["l0"] = (codes > 0).sum() / max(1, codes.shape[0])
                terms["dead_frac"] = sae.dead_mask(cfg.dead_window).float().mean()
            pending.append((step, lr, terms))
            save = folder is not None and (
                done == end or (cfg.checkpoint_every > 0 and done % cfg.checkpoint_every == 0)
            )
            if "l0" in terms or save or done == end:
                history += _read_back(pending, finite, cfg.hook_name)
                pending.clear()
                finite.clear()
                row = history[-1]
                stats = f"loss {row['loss']:.4g}" + (
                    f"  L0 {row['l0']:.1f}  dead {row['dead_frac']:.1%}" if "l0" in row else ""
                )
                bar.update(task, completed=done, stats=stats)
            if save:
                assert folder is not None
                _save_checkpoint(folder, cfg, done, sae, opt, history)
    if cfg.architecture == "standard":
        sae.fold_decoder_norms_()  # unit feature directions; the checkpoint keeps the trained norms
    sae.eval()
    return TrainResult(sae, cfg, history, time.time() - t0)
