"""SAELens's on-disk format: a folder with `cfg.json` and `sae_weights.safetensors`.

Written the way SAELens 6.x writes it (`SAE.save_model`): top-level d_in, d_sae, dtype, device,
apply_b_dec_to_input, normalize_activations, reshape_activations, architecture (and k,
rescale_acts_by_decoder_norm for topk), with hook and model names under `metadata`. Weights are
W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in] (+ threshold for jumprelu).
Reading also accepts pre-6.0 configs (hook_point / hook_name at the top level, topk as
activation_fn "topk" with activation_fn_kwargs.k). mechscope does not import sae_lens for this.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import torch

from mechscope.errors import SAEError
from mechscope.files import read_json, read_safetensors, write_json, write_safetensors
from mechscope.sae.config import Architecture, SAEConfig
from mechscope.sae.model import SparseAutoencoder

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
FORMAT_VERSION = "6.0.0"  # the SAELens config layout written here (v6, metadata block)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _weight_names(architecture: str) -> set[str]:
    names = {"W_enc", "b_enc", "W_dec", "b_dec"}
    return names | {"threshold"} if architecture == "jumprelu" else names


def saelens_cfg(c: SAEConfig, dtype: str, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """SAELens 6.x's cfg.json for an SAE of config `c` saved in `dtype` (`metadata`: extra
    entries of its metadata block); transcoders add their output keys to it."""
    return {
        "d_in": c.d_in,
        "d_sae": c.d_sae,
        "dtype": dtype,
        "device": "cpu",
        "apply_b_dec_to_input": c.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {
            "sae_lens_version": FORMAT_VERSION,
            "sae_lens_training_version": FORMAT_VERSION,
            "model_name": c.model_name,
            "hook_name": c.hook_name,
            "hook_head_index": None,
            "prepend_bos": True,
            "exclude_special_tokens": True,
            "mechscope": c.extra,
            **(metadata or {}),
        },
        "architecture": c.architecture,
    }


def save_saelens(
    sae: SparseAutoencoder,
    path: str | Path,
    dtype: str = "float32",
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write `sae` to folder `path` in SAELens format (weights cast to `dtype`); returns the folder.

    metadata: extra entries for cfg.json's metadata block (e.g. context_size, evaluation).
    """
    if dtype not in _DTYPES:
        raise SAEError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    folder = Path(path)
    c = sae.cfg
    params = dict(sae.named_parameters())
    weights = {
        n: params[n].detach().to(device="cpu", dtype=_DTYPES[dtype]).contiguous()
        for n in sorted(_weight_names(c.architecture))
    }
    cfg = saelens_cfg(c, dtype, metadata)
    if c.architecture == "topk":
        cfg |= {"k": c.k, "rescale_acts_by_decoder_norm": False}
    write_safetensors(folder / WEIGHTS_FILE, weights)
    write_json(folder / CFG_FILE, cfg, indent=2)  # last: a folder with cfg.json is complete
    return folder


def _config_from_saelens(cfg: dict[str, Any], where: str) -> SAEConfig:
    meta = cfg.get("metadata") or {}
    arch = cfg.get("architecture")
    k = cfg.get("k")
    if arch is None:  # pre-6.0 layout
        kwargs = cfg.get("activation_fn_kwargs") or {}
        if cfg.get("activation_fn", cfg.get("activation_fn_str")) == "topk":
            arch, k = "topk", kwargs.get("k")
        else:
            arch = "standard"
    if arch not in ("standard", "topk", "jumprelu"):
        raise SAEError(
            f"{where}: architecture {arch!r} is not supported (standard, topk, jumprelu)"
        )
    norm = cfg.get("normalize_activations", "none")
    if norm not in (None, False, "none"):
        raise SAEError(f"{where}: normalize_activations={norm!r} is not supported (only 'none')")
    if cfg.get("reshape_activations", "none") not in (None, "none"):
        raise SAEError(f"{where}: hook_z reshaping (per-head SAEs) is not supported")
    if cfg.get("rescale_acts_by_decoder_norm"):
        raise SAEError(f"{where}: rescale_acts_by_decoder_norm=True is not supported")
    hook = meta.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point") or ""
    return SAEConfig(
        d_in=int(cfg["d_in"]),
        d_sae=int(cfg["d_sae"]),
        architecture=cast(Architecture, arch),
        k=None if k is None else int(k),
        hook_name=str(hook),
        model_name=str(meta.get("model_name") or cfg.get("model_name") or ""),
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
        extra=dict(meta.get("mechscope") or {}),
    )


def load_saelens(
    path: str | Path,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
) -> SparseAutoencoder:
    """Read an SAE from a SAELens-format folder (cfg.json + sae_weights.safetensors), on
    `device` (default CPU; pass the model's, e.g. `as_lean(model).device`)."""
    folder = Path(path)
    for f in (CFG_FILE, WEIGHTS_FILE):
        if not (folder / f).exists():
            raise SAEError(f"{folder} has no {f}: not a SAELens-format SAE folder")
    remake = "Retrain it (`mechscope sae train --out`) or copy the folder again"
    raw = read_json(folder / CFG_FILE, SAEError, remake)
    missing = [k for k in ("d_in", "d_sae") if k not in raw] if isinstance(raw, dict) else []
    if not isinstance(raw, dict) or missing:
        raise SAEError(
            f"{folder / CFG_FILE} lacks {', '.join(missing) or 'a JSON object'}: "
            f"not a SAELens cfg.json. {remake}"
        )
    cfg = _config_from_saelens(raw, str(folder))
    state = read_safetensors(folder / WEIGHTS_FILE, SAEError, remake, finite=True)
    want = _weight_names(cfg.architecture)
    if set(state) != want:
        raise SAEError(f"{folder / WEIGHTS_FILE} holds {sorted(state)}, expected {sorted(want)}")
    shapes = {
        "W_enc": (cfg.d_in, cfg.d_sae),
        "W_dec": (cfg.d_sae, cfg.d_in),
        "b_enc": (cfg.d_sae,),
        "b_dec": (cfg.d_in,),
        "threshold": (cfg.d_sae,),
    }
    for n, t in state.items():
        if tuple(t.shape) != shapes[n]:
            raise SAEError(f"{n} has shape {tuple(t.shape)}, cfg.json implies {shapes[n]}")
    sae = SparseAutoencoder(cfg)
    with torch.no_grad():
        for n, p in sae.named_parameters():
            p.copy_(state[n].to(torch.float32))
    return sae.to(device=device, dtype=dtype).eval()


def load_saelens_from_hub(
    repo_id: str, folder: str = "", revision: str | None = None
) -> SparseAutoencoder:
    """Download a SAELens-format SAE from a Hugging Face repo (folder inside it) and load it.

    Needs network access; offline, files already in the HF cache are used.
    """
    from huggingface_hub import hf_hub_download

    prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
    try:
        files = [
            hf_hub_download(repo_id, prefix + f, revision=revision)
            for f in (CFG_FILE, WEIGHTS_FILE)
        ]
    except Exception as e:  # offline, missing repo or file: one clear message
        raise SAEError(
            f"could not fetch {prefix}{CFG_FILE} and {WEIGHTS_FILE} from hub repo {repo_id!r}: {e}"
        ) from e
    return load_saelens(Path(files[0]).parent)
