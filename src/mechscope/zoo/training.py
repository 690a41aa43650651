"""Deterministic training of the bundled models (`mechscope zoo build NAME`).

Everything is seeded; the corpus is the running Python's standard library. Weights are written as
safetensors in fp16, with a `card.json` recording how they were made.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from mechscope.artefacts import TOKENIZER_DIR, model_dir
from mechscope.data.corpus import stdlib_texts
from mechscope.data.mixture import TokenStream, synthetic_texts
from mechscope.data.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer
from mechscope.files import write_files, write_json, write_safetensors
from mechscope.progress import progress_bar
from mechscope.zoo.specs import N_CTX, SPECS, VOCAB_SIZE, ModelSpec


def build_tokenizer(out: Path = TOKENIZER_DIR) -> Path:
    """Train the BPE tokenizer on stdlib source plus synthetic task text; returns the folder."""
    out.mkdir(parents=True, exist_ok=True)
    texts = stdlib_texts("train") + synthetic_texts(random.Random(0), 20_000)
    tok = train_tokenizer(texts, vocab_size=VOCAB_SIZE)
    save_tokenizer(tok, out)
    write_json(
        out / "card.json",
        {
            "name": "tokenizer",
            "kind": "byte-level BPE (HF tokenizers)",
            "vocab_size": tok.get_vocab_size(),
            "special_tokens": {"<|endoftext|>": 0},
            "data": "Python standard library source (tests excluded, train split) + 20,000 "
            "synthetic docstring/IOI documents (seed 0)",
            "python_version": platform.python_version(),
            "command": "mechscope zoo build tokenizer",
        },
        indent=2,
    )
    return out


def new_model(spec: ModelSpec) -> nn.Module:
    """A freshly initialised, seeded model of `spec`: NativeModel, GPT2LMHeadModel or
    LlamaForCausalLM."""
    from mechscope.zoo.architectures import gpt2_config, llama_config, native_config

    torch.manual_seed(spec.seed)
    if spec.kind == "native":
        from transformer_lens.model_bridge.sources.native import (
            NativeModel,
            initialize_native_model,
        )

        cfg = native_config(spec.to_dict())
        model = NativeModel(cfg)
        initialize_native_model(model, cfg)
        return model
    if spec.kind == "llama":
        from transformers import LlamaForCausalLM

        return LlamaForCausalLM(llama_config(spec.to_dict()))
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel(gpt2_config(spec.to_dict()))


def logits_of(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    out = model(tokens)
    return out if isinstance(out, torch.Tensor) else out.logits


def lm_loss(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over [batch, pos] tokens (position 0 = BOS is input only)."""
    logits = logits_of(model, tokens)
    return nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1)
    )


@torch.no_grad()
def evaluate(model: nn.Module, tokenizer, heldout: torch.Tensor) -> dict[str, float]:
    """Held-out LM loss and task metrics on prompts never used in training (seed 1000)."""
    from mechscope.tasks import make_task

    model.eval()
    dev = next(model.parameters()).device
    loss = lm_loss(model, heldout.to(dev))
    out: dict[str, float] = {"heldout_stdlib_loss": round(float(loss), 4)}
    for name in ("docstring", "ioi", "induction"):
        task = make_task(name, tokenizer, n=200, seed=1000)
        logits = logits_of(model, task.clean_tokens.to(dev)).float().cpu()
        corrupt = logits_of(model, task.corrupt_tokens.to(dev)).float().cpu()
        out[f"{name}_{task.metric}"] = round(float(task.score(logits).mean()), 4)
        out[f"{name}_{task.metric}_corrupt"] = round(float(task.score(corrupt).mean()), 4)
        out[f"{name}_top1_acc"] = round(task.accuracy(logits), 4)
        if task.metric != "logit_diff":
            continue
        # accuracy among the candidate answers (correct vs its wrong answers)
        last = logits[:, -1]
        cand = torch.cat([task.answers[:, None], task.wrong_answers], 1)
        out[f"{name}_candidate_acc"] = round(
            float((last.gather(1, cand).argmax(1) == 0).float().mean()), 4
        )
    model.train()
    return out


def _state_dict(model: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    sd = {}
    seen: set[int] = set()
    for k, v in model.state_dict().items():
        if not v.is_floating_point() or v.data_ptr() in seen:  # buffers / tied weights once
            continue
        seen.add(v.data_ptr())
        sd[k] = v.detach().to("cpu", dtype).contiguous().clone()
    return sd


def build_model(
    name: str, out: Path | None = None, steps: int | None = None, device: str = "cpu"
) -> Path:
    """Train bundled model `name` from scratch and write weights + card; returns the folder.

    device: where to train ("cpu", "cuda"); the same seed gives the same model on one kind of
    device, and the card records which one built it.
    """
    if name not in SPECS:
        raise KeyError(f"Unknown zoo model {name!r}. Buildable: tokenizer, {', '.join(SPECS)}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} asked for, but this torch ({torch.__version__}) sees no CUDA GPU: "
            "build with --device cpu, or install the torch build that fits the GPU"
        )
    spec = SPECS[name]
    steps = steps or spec.steps
    out = out or model_dir(name)
    out.mkdir(parents=True, exist_ok=True)
    if device.startswith("cuda"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    torch.use_deterministic_algorithms(True)
    tokenizer = load_tokenizer(TOKENIZER_DIR)
    model = new_model(spec).to(device)
    stream = TokenStream(tokenizer, spec.mixture, N_CTX, seed=spec.seed)
    held = TokenStream(tokenizer, {"stdlib": 1.0}, N_CTX, seed=12345, split="heldout")
    heldout = next(held.batches(64))

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    groups: list[dict[str, Any]] = [
        {"params": decay, "weight_decay": spec.weight_decay},
        {"params": no_decay},
    ]
    opt = torch.optim.AdamW(
        groups,
        lr=spec.lr,
        betas=(0.9, 0.95),
    )

    def lr_at(step: int) -> float:
        if step < spec.warmup:
            return spec.lr * (step + 1) / spec.warmup
        frac = (step - spec.warmup) / max(1, steps - spec.warmup)
        return spec.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    checkpoints: list[dict[str, Any]] = []
    ckpt_dir = out / "checkpoints"

    def save_checkpoint(step: int) -> None:
        ckpt_dir.mkdir(exist_ok=True)
        write_safetensors(ckpt_dir / f"step-{step}.safetensors", _state_dict(model, torch.float16))
        checkpoints.append(
            {"revision": f"step-{step}", "step": step, **evaluate(model, tokenizer, heldout)}
        )

    t0 = time.time()
    losses: list[float] = []
    batches = stream.batches(spec.batch_size)
    with progress_bar(sys.stderr.isatty()) as progress:
        bar = progress.add_task(name, total=steps)
        for step in range(steps):
            if step in spec.checkpoint_steps:
                save_checkpoint(step)
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            loss = lm_loss(model, next(batches).to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            mean = sum(losses[-50:]) / len(losses[-50:])
            progress.update(bar, advance=1, stats=f"loss {mean:.3f}")
            if not sys.stderr.isatty() and step % 250 == 0:
                print(f"{name} step {step}/{steps} loss {losses[-1]:.3f}", flush=True)
            if step and step % 500 == 0:
                m = evaluate(model, tokenizer, heldout)
                progress.console.print(
                    f"{name} step {step}: "
                    + ", ".join(f"{k} {v:.3g}" for k, v in m.items() if "corrupt" not in k)
                )

    with torch.no_grad():  # the card describes the stored (fp16) weights
        for p in model.parameters():
            p.copy_(p.half().float())
    _save_final(spec, model, out)
    metrics = evaluate(model, tokenizer, heldout)
    card = {
        "name": name,
        "description": spec.description,
        "architecture": spec.to_dict() | {"vocab_size": VOCAB_SIZE, "n_ctx": N_CTX},
        "n_params": sum(p.numel() for p in model.parameters()),
        "data": f"BOS + {N_CTX - 1}-token windows of a stream mixing: Python stdlib source "
        "(train split, tests excluded), synthetic functions with reST docstrings, IOI-style "
        "sentences, repeated random token sequences; weights " + json.dumps(spec.mixture),
        "training": {
            "steps": steps,
            "batch_size": spec.batch_size,
            "tokens_seen": steps * spec.batch_size * N_CTX,
            "optimizer": f"AdamW(lr={spec.lr}, betas=(0.9, 0.95), wd={spec.weight_decay}), "
            f"warmup {spec.warmup}, cosine to 0.1x",
            "seed": spec.seed,
            "device": torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu",
            "final_train_loss_avg50": round(sum(losses[-50:]) / len(losses[-50:]), 4),
            "wall_seconds": round(time.time() - t0, 1),
        },
        "metrics": metrics,
        "metrics_note": "task metrics on 200 prompts of seed 1000 (training text is generated "
        "from other seeds and formats); heldout_stdlib_loss on 64 windows of held-out stdlib files",
        "checkpoints": checkpoints,
        "command": f"mechscope zoo build {name}"
        + ("" if device == "cpu" else f" --device {device}"),
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
    }
    write_json(out / "card.json", card, indent=2)
    return out


def _save_final(spec: ModelSpec, model: nn.Module, out: Path) -> None:
    """Final weights in fp16 (the zoo's ~64 MB budget); loaders cast to the dtype asked for."""
    if spec.kind in ("gpt2", "llama"):  # HF models: config.json + model.safetensors
        write_files(out, model.save_pretrained)  # type: ignore[arg-type]
        (out / "generation_config.json").unlink(missing_ok=True)
        weights = out / "model.safetensors"
        write_safetensors(
            weights,
            {k: v.half().contiguous() for k, v in load_file(str(weights)).items()},
            {"format": "pt"},
        )
    else:
        write_safetensors(out / "model.safetensors", _state_dict(model, torch.float16))
        from mechscope.zoo.architectures import native_config_dict

        write_json(out / "config.json", native_config_dict(spec.to_dict()), indent=2)
