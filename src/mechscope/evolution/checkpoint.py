"""Resumable streaming: `compute_evolution`'s state between batches, in one file.

`state.safetensors` holds pass 1's per-feature firing counts and top activations and, once pass 2
has begun, each layer pair's running sums (`PairStats.state_dict`); its metadata gives the stage
("features": pass 1, "pairs": pass 2, "done"), the next batch to read, the tokens read, and a
fingerprint of what the sums depend on (the token batches, the SAEs' weights and hooks,
rel_threshold, n_examples). A rerun with the same inputs resumes where the file left off; a
finished ("done") state lets a rerun re-finalise (another tau, gate_threshold or min_support,
other stored measures) without streaming again. Other inputs are refused, never mixed in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from mechscope.errors import EvolutionError
from mechscope.files import write_safetensors
from mechscope.sae.model import SparseAutoencoder

STATE_FILE = "state.safetensors"
STAGES = ("features", "pairs", "done")


@dataclass
class StreamState:
    """Where a streamed run stands: `stage`, the next `batch` of that stage to read, the non-special
    tokens of pass 1 (`n_tokens`) and the sums so far (`tensors`, named by `compute_evolution`)."""

    stage: str
    batch: int
    n_tokens: int
    tensors: dict[str, Tensor]


def _bytes(t: Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def fingerprint(
    batches: Sequence[Tensor],
    saes: Sequence[SparseAutoencoder],
    hooks: Sequence[str],
    rel_threshold: float,
    n_examples: int,
) -> str:
    """SHA-256 of everything the streamed sums depend on (tokens, SAE weights and hooks, the
    activity threshold, the examples kept per feature)."""
    h = hashlib.sha256()
    h.update(repr((list(hooks), float(rel_threshold), int(n_examples), len(batches))).encode())
    for b in batches:
        h.update(repr(tuple(b.shape)).encode())
        h.update(_bytes(b.long()))
    for sae in saes:
        for name, p in sorted(sae.named_parameters()):
            h.update(f"{name}{tuple(p.shape)}{p.dtype}".encode())
            h.update(_bytes(p))
    return h.hexdigest()


def save_state(folder: str | Path, fp: str, state: StreamState) -> Path:
    """Write `state` (atomically) to folder/state.safetensors under fingerprint `fp`."""
    if state.stage not in STAGES:
        raise EvolutionError(f"unknown stage {state.stage!r}; one of {STAGES}")
    path = Path(folder) / STATE_FILE
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.tensors.items()}
    meta = {
        "fingerprint": fp,
        "stage": state.stage,
        "batch": str(state.batch),
        "n_tokens": str(state.n_tokens),
    }
    write_safetensors(path, tensors, meta)
    return path


def load_state(folder: str | Path, fp: str) -> StreamState | None:
    """The state in folder/state.safetensors (None if there is none); EvolutionError if it was
    written for other inputs (fingerprint `fp` differs)."""
    path = Path(folder) / STATE_FILE
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("fingerprint") != fp:
                raise EvolutionError(
                    f"{path} was written for other token batches, SAEs or settings "
                    "(rel_threshold, n_examples); remove it or give another checkpoint folder"
                )
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (no dict)
    except SafetensorError as e:
        raise EvolutionError(
            f"{path}: is truncated or not a safetensors file ({e}). Remove it: the run then "
            "starts from the beginning"
        ) from e
    if meta.get("stage") not in STAGES:
        raise EvolutionError(f"{path}: unknown stage {meta.get('stage')!r}; remove it")
    return StreamState(meta["stage"], int(meta["batch"]), int(meta["n_tokens"]), tensors)
