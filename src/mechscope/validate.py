"""Command-line options checked before any model loads: each check names the option, the value
and what is accepted, and raises `OptionError` (the CLI turns it into a one-line error, exit 2).

    with options():                       # in a command, before `load(...)`
        integer("--n", n, lo=1)
        number("--coeff", coeff, lo=0)
        choice("--direction", direction, DIRECTIONS)

Memory: `check_memory` refuses work whose estimated peak (`patch_bytes`, `regions_bytes`,
`sae_bytes`, from the model's sizes in `model_dims`) exceeds the memory available now, naming the
estimate and the option that shrinks it.
"""

from __future__ import annotations

import json
import math
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mechscope.errors import OptionError

DTYPES: tuple[str, ...] = ("float32", "float16", "bfloat16", "float64")
SEED_MAX = 2**32 - 1  # numpy's generators take seeds in [0, 2**32 - 1]


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _range(lo: float | None, hi: float | None, lo_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{_num(lo)}, {_num(hi)}]"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {_num(lo)}"
    return f"<= {_num(hi)}" if hi is not None else "any value"


def integer(option: str, value: int | None, lo: int | None = None, hi: int | None = None) -> None:
    """`value` (None: not given, fine) is an integer in [lo, hi]."""
    if value is None:
        return
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise OptionError(f"{option} must be an integer {_range(lo, hi)}, got {value}")


def position(option: str, value: int | None, n_pos: int, what: str = "sequences") -> None:
    """`value` (None: not given) indexes n_pos positions: in [-n_pos, n_pos - 1]."""
    if value is not None and not -n_pos <= value < n_pos:
        raise OptionError(
            f"{option} must be a position in [{-n_pos}, {n_pos - 1}] of the {n_pos}-token "
            f"{what}, got {value}"
        )


def seed(option: str, value: int | None) -> None:
    """A seed in [0, 2**32 - 1] (what numpy and torch both accept)."""
    integer(option, value, 0, SEED_MAX)


def number(
    option: str,
    value: float | None,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
) -> None:
    """`value` (None: not given) is finite and in [lo, hi] ((lo, hi] with lo_open)."""
    if value is None:
        return
    bad = not math.isfinite(value)
    bad = bad or (lo is not None and (value <= lo if lo_open else value < lo))
    bad = bad or (hi is not None and value > hi)
    if bad:
        raise OptionError(
            f"{option} must be a finite number {_range(lo, hi, lo_open)}, got {value:g}"
        )


def numbers(
    option: str, spec: str, lo: float | None = None, hi: float | None = None, integers: bool = False
) -> list[float]:
    """The comma-separated numbers of `spec` ("1,3,10"), each checked like `number`."""
    kind = "integers" if integers else "numbers"
    try:
        values = [(int if integers else float)(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise OptionError(f"{option} takes comma-separated {kind}, got {spec!r}") from None
    for v in values:
        try:
            number(option, v, lo, hi)
        except OptionError:
            raise OptionError(
                f"{option} takes finite {kind} {_range(lo, hi)}, got {v:g} in {spec!r}"
            ) from None
    return values


def choice(option: str, value: str | None, allowed: Iterable[str]) -> None:
    """`value` (None: not given) is one of `allowed`."""
    allowed = list(allowed)
    if value is not None and value not in allowed:
        raise OptionError(f"{option} {value!r} is unknown; choose one of {', '.join(allowed)}")


def choices(option: str, values: Sequence[str] | None, allowed: Iterable[str]) -> None:
    """Every value of a repeated option is one of `allowed`."""
    for v in values or []:
        choice(option, v, allowed)


def dtype(option: str, value: str | None) -> None:
    """A model dtype mechscope computes in (float8 and integer types are refused)."""
    if value is not None:
        choice(option, value.removeprefix("torch."), DTYPES)


def device(option: str, value: str | None) -> None:
    """A torch device that exists here: `cuda` needs `torch.cuda.is_available()`."""
    if value is None:
        return
    import torch

    try:
        dev = torch.device(value)
    except RuntimeError:
        raise OptionError(
            f"{option} must be a torch device (cpu, cuda, cuda:1, mps), got {value!r}"
        ) from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise OptionError(
                f"{option} {value}: this machine has no CUDA device (torch.cuda.is_available() "
                "is False); use --device cpu, or install the CUDA build of torch (README)"
            )
        if dev.index is not None and dev.index >= n:
            raise OptionError(f"{option} {value}: there are {n} CUDA device(s), cuda:0-{n - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise OptionError(f"{option} {value}: MPS is not available here; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise OptionError(f"{option} must be cpu, cuda, cuda:N or mps, got {value!r}")


def port(option: str, value: int, host: str = "127.0.0.1") -> None:
    """A port in [1, 65535] that nothing on `host` listens on yet."""
    integer(option, value, 1, 65535)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, value))
        except OSError as e:
            raise OptionError(
                f"{option} {value} cannot be used on {host} ({e.strerror}); give another port"
            ) from None


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")


def model_tokenizer(option: str, model: str) -> None:
    """A local HF model folder (config.json with a model_type) holds its tokenizer (any of
    `TOKENIZER_FILES`): without one, HF builds an empty tokenizer and prompts cannot be made.
    Zoo names, hub names and mechscope-native folders (the bundled tokenizer) pass."""
    folder = Path(model).expanduser()
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return  # not a local model folder: loading says what is wrong
    if "model_type" in cfg and not any((folder / f).exists() for f in TOKENIZER_FILES):
        raise OptionError(
            f"{option} {model}: the folder has no tokenizer (none of {', '.join(TOKENIZER_FILES)})"
            f"; save the model's tokenizer beside it "
            f"(`tokenizer.save_pretrained` into {str(folder)!r})"
        )


# -- memory --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dims:
    """The sizes of a model that memory estimates need (n_kv_heads 0: n_heads; d_head 0:
    d_model // n_heads)."""

    n_layers: int
    d_model: int
    d_mlp: int
    d_vocab: int
    n_ctx: int
    n_heads: int = 1
    n_kv_heads: int = 0
    d_head: int = 0
    attn_only: bool = False
    rotary: bool = False


_KEYS = {
    "n_layers": ("n_layers", "n_layer", "num_hidden_layers"),
    "d_model": ("d_model", "n_embd", "hidden_size"),
    "d_mlp": ("d_mlp", "n_inner", "intermediate_size"),
    "d_vocab": ("d_vocab", "vocab_size"),
    "n_ctx": ("n_ctx", "n_positions", "max_position_embeddings"),
    "n_heads": ("n_heads", "n_head", "num_attention_heads"),
    "n_kv_heads": ("n_key_value_heads", "num_key_value_heads"),
    "d_head": ("d_head", "head_dim"),
}


def model_dims(model: Any) -> Dims | None:
    """The sizes of a loaded model (its `cfg`), or of a zoo name or local HF folder read from its
    config.json without loading it; None where they cannot be known without loading."""
    cfg: dict[str, Any]
    if not isinstance(model, str | Path):
        c = model.cfg
        cfg = {k: getattr(c, k, None) for keys in _KEYS.values() for k in keys}
        cfg.update(
            attn_only=getattr(c, "attn_only", False),
            positional_embedding_type=getattr(c, "positional_embedding_type", None),
        )
    else:
        from mechscope.artefacts import model_dir, zoo_names

        name = str(model)
        folder = model_dir(name) if name in zoo_names() else Path(name).expanduser()
        try:
            cfg = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):
            return None
    found: dict[str, int] = {}
    for field, keys in _KEYS.items():
        v = next((cfg[k] for k in keys if cfg.get(k) is not None), None)
        found[field] = int(v) if v is not None else 0
    if not (found["n_layers"] and found["d_model"] and found["d_vocab"]):
        return None
    found["d_mlp"] = found["d_mlp"] or 4 * found["d_model"]
    found["n_ctx"] = found["n_ctx"] or 1024
    found["n_heads"] = found["n_heads"] or max(1, found["d_model"] // 64)
    found["n_kv_heads"] = found["n_kv_heads"] or found["n_heads"]
    found["d_head"] = found["d_head"] or found["d_model"] // found["n_heads"]
    pos = cfg.get("positional_embedding_type")  # a TransformerLens cfg; HF: rope_* / rotary_*
    rotary = pos == "rotary" if pos else any(k.startswith(("rope", "rotary")) for k in cfg)
    return Dims(**found, attn_only=bool(cfg.get("attn_only")), rotary=rotary)


def _heads(dims: Dims) -> tuple[int, int, int]:
    """(query heads, key/value heads, d_head) of dims."""
    H = dims.n_heads
    return H, dims.n_kv_heads or H, dims.d_head or dims.d_model // H


def patch_row_bytes(dims: Dims, n_pos: int, seq_len: int, n_logits: int) -> int:
    """Rough peak bytes of one prompt row of a patched run over positions seq_len - n_pos.. of
    every layer (float32; per-head copies and attention scores dominate; earlier positions' keys
    and values add on); the patching engine chunks its runs by it."""
    H, K, dh = _heads(dims)
    d, d_mlp = dims.d_model, 0 if dims.attn_only else dims.d_mlp
    per_pos = 5 * H * d + 3 * H * seq_len + 2 * d_mlp + 8 * d
    prefix = 2 * dims.n_layers * (seq_len - n_pos) * K * dh
    return 4 * (n_pos * per_pos + prefix + n_logits * dims.d_vocab)


# patching components with a head axis ("pos_head" layout in patching/specs.py)
PER_HEAD_COMPONENTS = ("q", "k", "v", "z", "result", "q_input", "k_input", "v_input")


def _component_floats(dims: Dims, component: str, seq_len: int) -> tuple[int, int]:
    """(heads, floats per token at one layer) of a patching component's hook."""
    H, K, dh = _heads(dims)
    heads = K if component in ("k", "v", "k_input", "v_input") else H
    if component in PER_HEAD_COMPONENTS[:4]:
        return heads, heads * dh
    if component in PER_HEAD_COMPONENTS[4:]:
        return heads, heads * dims.d_model
    return heads, H * seq_len if component == "pattern" else dims.d_model


def patch_cache_bytes(dims: Dims, n: int, seq_len: int, component: str, direction: str) -> int:
    """Bytes of the caches a sweep of `component` holds (float32): the base run's (and the source
    run's, denoising / noising) hooks that it reads (`engine.sweep_hooks`). Per layer and token:
    hook_resid_post, hook_attn_out (+ hook_resid_mid, hook_mlp_out with MLPs), hook_q / _k / _v,
    hook_z (+ hook_rot_q / _k, rotary), hook_pattern (seq_len per head); hook_resid_pre is the
    previous resid_post (one more at layer 0) and hook_{q,k,v}_input are views of it;
    hook_result adds H x d_model."""
    H, K, dh = _heads(dims)
    d = dims.d_model
    per_layer = 2 * d + (2 * H + 2 * K) * dh + H * seq_len
    per_layer += (H + K) * dh if dims.rotary else 0
    per_layer += 0 if dims.attn_only else 2 * d
    per_layer += _component_floats(dims, component, seq_len)[1] if component == "result" else 0
    runs = 2 if direction in ("denoising", "noising") else 1
    return 4 * runs * n * seq_len * (dims.n_layers * per_layer + d)


def patch_bytes(
    dims: Dims,
    n: int,
    seq_len: int,
    component: str = "z",
    direction: str = "denoising",
    memory_mb: float = 512.0,
) -> int:
    """Peak bytes of a sweep of `component` (one patch per layer x position (x head)) over n
    prompt pairs of seq_len tokens (float32), as patching/engine.py holds them: the caches
    (`patch_cache_bytes`); the sources made from them (zeros for the zero ablation, the mean,
    the projections of q/k/v inputs); every variant's boolean mask; and one chunk of patched runs
    (`patch_row_bytes` per row): the variants sharing a layer and a first position (one, or one
    per head), as many as `memory_mb` holds, at least one."""
    H, _, dh = _heads(dims)
    T, L = seq_len, dims.n_layers
    heads, own = _component_floats(dims, component, seq_len)
    sources = {"zero": n * T * L * own, "mean": T * L * own}.get(direction, 0)
    sources += n * T * L * heads * dh if component.endswith("_input") else 0
    if component == "pattern":  # masks [head, dest, src], one per layer x head x position
        group, mask = H, H * T * T
    elif component in PER_HEAD_COMPONENTS:  # [pos, head], one per layer x position x head
        group, mask = heads, T * heads
    else:  # [pos], one per layer x position
        group, mask = 1, T
    masks = L * T * group * mask
    per_variant = n * patch_row_bytes(dims, T, T, 1)  # from position 0
    chunk = min(group, max(1, int(memory_mb * 2**20) // per_variant)) * per_variant
    caches = patch_cache_bytes(dims, n, T, component, direction)
    return caches + 4 * sources + masks + chunk


def regions_bytes(dims: Dims, n_paths: int, n_steps: int, seq_len: int, batch: int) -> int:
    """Peak bytes of an interpolation over n_paths paths of n_steps points: every path point
    [paths, S, d] (real and isotropic paths) and one batch of rows (at least one whole path,
    seq_len tokens each) through the model."""
    points = 2 * n_paths * n_steps * dims.d_model
    rows = max(n_steps, (batch // n_steps) * n_steps)
    per_row = seq_len * dims.n_layers * (6 * dims.d_model + 2 * dims.d_mlp) + 3 * dims.d_vocab
    return 4 * (points + rows * per_row)


def sae_bytes(dims: Dims, batch_size: int, expansion: int) -> int:
    """Peak bytes of SAE training: encoder and decoder with gradients and Adam moments, the
    batch's codes with their gradients, and the model's forward on the batch."""
    d_sae = expansion * dims.d_model
    params = 4 * 2 * dims.d_model * d_sae
    tokens = batch_size * dims.n_ctx
    codes = 3 * tokens * d_sae
    forward = tokens * (dims.n_layers * (6 * dims.d_model + 2 * dims.d_mlp) + 2 * dims.d_vocab)
    return 4 * (params + codes + forward)


def available_memory() -> int:
    """Bytes of memory available now (psutil, else /proc/meminfo's MemAvailable); 0 if unknown."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def byte_size(n: float) -> str:
    """n bytes as "1.5 GB" or "0.2 MB"."""
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.1f} MB"


def check_memory(what: str, nbytes: int, shrink: str, available: int | None = None) -> None:
    """Refuse `what` when its estimated peak `nbytes` exceeds the memory available (unknown
    available memory: no check); `shrink` names the option(s) that make it smaller."""
    free = available_memory() if available is None else available
    if free and nbytes > free:
        raise OptionError(
            f"{what} would need about {byte_size(nbytes)} of memory and "
            f"{byte_size(free)} is available; "
            f"lower {shrink}"
        )


def env_flag(name: str) -> bool:
    """Whether environment variable `name` is set to a true value (1, true, yes, on)."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
