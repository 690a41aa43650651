"""`load_model`: one entry point for bundled zoo models, local HF directories and hub names.

Every path returns a TransformerLens `TransformerBridge` in compatibility mode (HookedTransformer
hook names; LayerNorm folded, weights centred), with per-head results (`attn.hook_result`),
split q/k/v inputs (`blocks.{l}.hook_q_input`, ...) and `hook_mlp_in` switched on where the bridge's
attention class supports them (HF GPT-2-family models do; TransformerLens-native attention does not,
see `fine_grained_hooks`).

Big models: `device_map` (accelerate's maps: "auto", "balanced", or a dict of module name ->
device), `n_devices` and `max_memory` pass through to the HF loader via TransformerLens's
`boot_transformers`; the bridge then runs each layer where its weights live. TransformerLens 3.9
accepts all-GPU maps (several GPUs) and all-CPU maps, and refuses maps mixing CPU and GPU.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from mechscope.artefacts import TOKENIZER_DIR, model_dir, revisions, zoo_names
from mechscope.errors import ModelLoadError
from mechscope.files import check_finite, read_json, read_safetensors


def _available() -> str:
    names = zoo_names()
    return (
        f"Bundled models: {', '.join(names) or '(none built; run `mechscope zoo build`)'}. "
        "Also accepted: a local HF model directory (saved with `save_pretrained`) or a hub name "
        "such as 'gpt2' (needs network access)."
    )


def _looks_like_path(s: str) -> bool:
    return s.startswith((".", "/", "~")) or (os.sep in s and not _is_hub_id(s))


def _is_hub_id(s: str) -> bool:
    parts = s.split("/")
    return len(parts) == 2 and all(parts) and not s.startswith((".", "/", "~"))


DeviceMap = str | dict[str, str | int]


def load_model(
    name_or_path: str | Path,
    revision: str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    *,
    device_map: DeviceMap | None = None,
    n_devices: int | None = None,
    max_memory: dict[str | int, str | int] | None = None,
) -> Any:
    """Load a model as a TransformerBridge in compatibility mode.

    Args:
        name_or_path: a bundled name (`mechscope zoo list`), a local HF directory, or a hub name.
        revision: a checkpoint ("step-500" for zoo models; a branch/tag/commit on the hub).
        device: torch device (default CPU for zoo models, TransformerLens's choice otherwise).
        dtype: parameter dtype, a torch dtype or its name ("bfloat16"); default float32.
            Metrics, KL divergences and statistics accumulate in float32 whatever it is.
        device_map, n_devices, max_memory: split an HF model over devices (accelerate's device
            maps, e.g. "auto", or {"transformer.h.0": 0, ..., "lm_head": 1}); exclusive with
            `device`. Models built on TransformerLens's native blocks load on one device.

    Raises:
        ModelLoadError: unknown name, missing directory, unknown revision, unsupported
            architecture, or a device map the loader refuses (with the reason).
    """
    dtype = _dtype(dtype)
    name = str(name_or_path)
    split = {"device_map": device_map, "n_devices": n_devices, "max_memory": max_memory}
    if device is not None and (device_map is not None or (n_devices or 1) > 1):
        raise ModelLoadError("pass either device or device_map / n_devices, not both")
    try:
        if name in zoo_names():
            bridge = _load_zoo(name, revision, device, dtype, split)
        elif Path(name).expanduser().is_dir():
            bridge = _load_local(Path(name).expanduser(), revision, device, dtype, split)
        elif _looks_like_path(name):
            raise ModelLoadError(f"No model directory at {name!r}. {_available()}")
        else:
            bridge = _load_hub(name, revision, device, dtype, split)
    except ValueError as e:  # TransformerLens / accelerate refusing a device map
        if device_map is None and n_devices is None:
            raise
        raise ModelLoadError(f"Could not place {name!r} with device_map={device_map!r}: {e}") from e
    check_finite(dict(bridge.named_parameters()), name, ModelLoadError, "Retrain or re-download it")
    return _prepare(bridge)


def _dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    found = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(found, torch.dtype) or not found.is_floating_point:
        raise ModelLoadError(
            f"unknown dtype {dtype!r}; use float32, bfloat16, float16 or a torch.dtype"
        )
    return found


def _native_split_error(split: dict[str, Any]) -> None:
    if split["device_map"] is not None or (split["n_devices"] or 1) > 1:
        raise ModelLoadError(
            "device_map / n_devices apply to HF-architecture models; this model is built on "
            "TransformerLens's native blocks and loads on one device (pass device=...). To split "
            "it, place its blocks with LeanModel(model).dispatch([...]) (docs/scale.md)"
        )


def _prepare(bridge: Any) -> Any:
    """Compatibility mode plus every fine-grained hook the bridge supports."""
    with warnings.catch_warnings():
        # OLMo-2 and Phi-3 keep their norm weights unfolded; LeanModel reads them where they are
        warnings.filterwarnings("ignore", message=".*does not support fold_ln")
        bridge.enable_compatibility_mode(disable_warnings=True)
    supported = []
    for flag in ("set_use_attn_result", "set_use_split_qkv_input"):
        try:
            getattr(bridge, flag)(True)
            supported.append(flag)
        except NotImplementedError:
            pass
    if not getattr(bridge.cfg, "attn_only", False):
        bridge.set_use_hook_mlp_in(True)
    bridge.fine_grained_hooks = len(supported) == 2
    bridge.eval()
    return bridge


def _tokenizer(path: Path | None = None) -> Any:
    from mechscope.data.tokenizer import load_tokenizer

    return load_tokenizer(path or TOKENIZER_DIR)


def _checkpoint(name: str, revision: str) -> Path:
    file = model_dir(name) / "checkpoints" / f"{revision}.safetensors"
    if not file.exists():
        raise ModelLoadError(
            f"Model {name!r} has no revision {revision!r}. Available: {', '.join(revisions(name))}."
        )
    return file


def _state(file: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    remake = "Rebuild a zoo model with `mechscope zoo build NAME`, or save the folder again"
    return {k: v.to(dtype) for k, v in read_safetensors(file, ModelLoadError, remake).items()}


def _load_zoo(
    name: str, revision: str | None, device: Any, dtype: torch.dtype, split: dict[str, Any]
) -> Any:
    folder = model_dir(name)
    cfg = json.loads((folder / "config.json").read_text())
    weights = (
        folder / "model.safetensors" if revision in (None, "main") else _checkpoint(name, revision)
    )
    if "model_type" not in cfg:
        _native_split_error(split)
        return _boot_native(cfg, weights, device, dtype, _tokenizer())
    if split["device_map"] is None and split["n_devices"] is None:
        return _boot_hf(folder, weights, device, dtype, _tokenizer())
    # a split model goes through the HF loader itself, as a hub model does
    from transformer_lens.model_bridge import TransformerBridge

    with tempfile.TemporaryDirectory() as tmp:
        os.symlink((folder / "config.json").resolve(), Path(tmp) / "config.json")
        os.symlink(weights.resolve(), Path(tmp) / "model.safetensors")
        bridge = TransformerBridge.boot_transformers(
            tmp, tokenizer=_tokenizer(), dtype=dtype, **split
        )
    bridge.cfg.model_name = str(folder)  # as unsplit (not the temporary folder's name)
    return bridge


def _boot_native(cfg: dict, weights: Path, device: Any, dtype: torch.dtype, tokenizer: Any) -> Any:
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module
    from transformer_lens.model_bridge.sources.native import NativeModel

    conf = TransformerBridgeConfig(**{k: v for k, v in cfg.items() if v is not None})
    conf.init_weights = False
    model = NativeModel(conf)
    missing, unexpected = model.load_state_dict(_state(weights, torch.float32), strict=False)
    if unexpected or [m for m in missing if not m.endswith("causal_mask")]:
        raise ModelLoadError(
            f"weights {weights} do not fit the config (missing {missing}, unexpected {unexpected})"
        )
    model.to(device=device, dtype=dtype)
    return build_bridge_from_module(
        model,
        architecture="TransformerLensNative",
        tl_config=conf,
        tokenizer=tokenizer,
        dtype=dtype,
        device=device,
        model_name=str(cfg.get("model_name", "native")),
    )


def _boot_hf(folder: Path, weights: Path, device: Any, dtype: torch.dtype, tokenizer: Any) -> Any:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(folder))
    hf_model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    hf_model.load_state_dict(_state(weights, torch.float32), strict=False)
    hf_model.tie_weights()
    hf_model.to(dtype)
    return TransformerBridge.boot_transformers(
        str(folder), hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=dtype
    )


def _load_local(
    folder: Path, revision: str | None, device: Any, dtype: torch.dtype, split: dict[str, Any]
) -> Any:
    cfg_file = folder / "config.json"
    if not cfg_file.exists():
        raise ModelLoadError(
            f"{folder} has no config.json: not a model directory. Save an HF model with "
            f"`model.save_pretrained(dir)` and its tokenizer beside it. {_available()}"
        )
    cfg = read_json(cfg_file, ModelLoadError, "Save the model again (`model.save_pretrained(dir)`)")
    if "model_type" not in cfg:  # a mechscope TL-native folder
        tok_dir = folder if (folder / "tokenizer.json").exists() else None
        _native_split_error(split)
        return _boot_native(cfg, folder / "model.safetensors", device, dtype, _tokenizer(tok_dir))
    _check_architecture(cfg)
    from safetensors import SafetensorError
    from transformer_lens.model_bridge import TransformerBridge

    # an absolute path is never a hub id: config, weights and tokenizer are read from the folder
    # alone (no process-wide HF_HUB_OFFLINE needed)
    try:
        return TransformerBridge.boot_transformers(
            str(folder.resolve()), device=device, dtype=dtype, **split
        )
    except (SafetensorError, OSError) as e:  # a truncated or corrupt weights file
        raise ModelLoadError(
            f"{folder}: cannot read its weights ({e}); save the model again "
            "(`model.save_pretrained(dir)`)"
        ) from e


def _load_hub(
    name: str, revision: str | None, device: Any, dtype: torch.dtype, split: dict[str, Any]
) -> Any:
    from transformer_lens.model_bridge import TransformerBridge

    _check_hub_reachable(name, revision)
    try:
        return TransformerBridge.boot_transformers(
            name, device=device, dtype=dtype, revision=revision, **split
        )
    except (OSError, ValueError) as e:  # not found / offline / gated
        raise ModelLoadError(
            f"Could not load {name!r} from the model hub ({type(e).__name__}: {e}). {_available()}"
        ) from e


def _check_hub_reachable(name: str, revision: str | None) -> None:
    """Fail at once, not after the hub client's retries, for a hub name that is not in the local
    HF cache when offline mode is set (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE) or the hub does
    not answer within 3 s."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants, try_to_load_from_cache

    from mechscope.validate import env_flag

    try:
        cached = try_to_load_from_cache(name, "config.json", revision=revision)
    except ValueError as e:  # not a valid hub id
        raise ModelLoadError(f"{name!r} is not a model name ({e}). {_available()}") from None
    if isinstance(cached, str):
        return
    offline = [v for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if env_flag(v)]
    if offline:
        raise ModelLoadError(
            f"{name!r} is not a bundled model, a local folder or in the local HF cache, and "
            f"{' / '.join(offline)} is set, so the hub is not asked. {_available()}"
        )
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=3).close()
    except OSError as e:
        raise ModelLoadError(
            f"{name!r} is not a bundled model, a local folder or in the local HF cache, and the "
            f"hub ({constants.ENDPOINT}) cannot be reached ({e}). {_available()}"
        ) from None


def supported_architectures() -> list[str]:
    """HF architecture names TransformerLens's bridge has an adapter for."""
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    return sorted(SUPPORTED_ARCHITECTURES)


def _check_architecture(cfg: dict) -> None:
    archs = cfg.get("architectures") or []
    supported = supported_architectures()
    if archs and not any(a in supported for a in archs):
        raise ModelLoadError(
            f"Architecture {archs} is not supported by TransformerLens's TransformerBridge. "
            f"Supported architectures include: {', '.join(supported[:25])}, ... "
            f"({len(supported)} in all; see mechscope.models.supported_architectures())."
        )
