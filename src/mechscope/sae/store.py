"""An on-disk activation store: several hooks' activations, written once, read many times.

A store folder holds
    shard-00000.safetensors, ...  `tokens` int32 [n_seq, n_ctx] and one tensor [n_seq, n_ctx, d]
                                  per hook, in the store's dtype; sequences in the order written
    manifest.json                 written last: model, revision, hooks {name: width}, dtype, n_ctx,
                                  n_seq, n_tokens, special token ids, the token source, and per
                                  shard its file name, n_seq, byte size and sha256
Each shard is written under a temporary name and then renamed, so a folder without a manifest is
an unfinished write. Reading checks a shard's byte size and tensor shapes against the manifest
before opening it (a truncated shard is a StoreError naming the file, never a short read) and
reads only the slices asked for (safetensors memory-maps the file); `verify()` also checks every
shard's sha256, which catches corruption that keeps the size.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import shutil
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor

from mechscope.errors import StoreError
from mechscope.files import write_json, write_safetensors
from mechscope.models.lean import as_lean
from mechscope.progress import progress_bar
from mechscope.sae.activations import collect_many, hook_width, special_ids
from mechscope.validate import byte_size

FORMAT = "mechscope-activation-store"
VERSION = 1
MANIFEST = "manifest.json"
SHARD = "shard-{:05d}.safetensors"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_KEYS = (
    "format",
    "version",
    "model",
    "hooks",
    "dtype",
    "n_ctx",
    "n_seq",
    "n_tokens",
    "special_ids",
    "shards",
)
_REWRITE = (
    "rewrite the store (write_store(..., overwrite=True) or `mechscope sae store --overwrite`)"
)


def _sha256(file: Path) -> str:
    h = hashlib.sha256()
    with file.open("rb") as f:
        while block := f.read(1 << 24):
            h.update(block)
    return h.hexdigest()


class _ShardWriter:
    """Collects batches of {"tokens": [b, n_ctx], hook: [b, n_ctx, d]} into shards of
    `per_shard` sequences, each written to a temporary name and renamed."""

    def __init__(self, folder: Path, per_shard: int) -> None:
        self.folder, self.per_shard = folder, per_shard
        self.pending: dict[str, list[Tensor]] = {}
        self.n_pending = 0
        self.shards: list[dict[str, Any]] = []

    def add(self, tensors: dict[str, Tensor]) -> None:
        for key, t in tensors.items():
            self.pending.setdefault(key, []).append(t)
        self.n_pending += len(tensors["tokens"])
        while self.n_pending >= self.per_shard:
            self._write(self.per_shard)

    def close(self) -> None:
        if self.n_pending:
            self._write(self.n_pending)

    def _write(self, n: int) -> None:
        joined = {key: torch.cat(ts) for key, ts in self.pending.items()}
        self.pending = {key: [t[n:].clone()] for key, t in joined.items()}
        self.n_pending -= n
        name = SHARD.format(len(self.shards))
        file = self.folder / name
        tensors = {key: t[:n].contiguous() for key, t in joined.items()}
        write_safetensors(file, tensors, {"format": FORMAT})
        self.shards.append(
            {"file": name, "n_seq": n, "bytes": file.stat().st_size, "sha256": _sha256(file)}
        )


def _prepare_folder(out: Path, overwrite: bool) -> None:
    """Make `out` an empty store folder; StoreError if it holds anything, unless `overwrite`
    (which deletes the store files there: manifest first, then shards)."""
    if out.exists() and not out.is_dir():
        raise StoreError(f"{out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            what = "an activation store" if (out / MANIFEST).exists() else "files"
            raise StoreError(
                f"{out} already holds {what}; pass overwrite=True (--overwrite) to replace it, "
                "or write to another folder"
            )
        (out / MANIFEST).unlink(missing_ok=True)
        for shard in out.glob("shard-*.safetensors*"):
            shard.unlink()
    out.mkdir(parents=True, exist_ok=True)


def store_bytes(n_seq: int, n_ctx: int, widths: dict[str, int], dtype: str) -> int:
    """Bytes of the tensors a store of n_seq sequences of n_ctx tokens holds: the int32 tokens
    and one [n_seq, n_ctx, width] tensor per hook in `dtype` (shard headers and the manifest
    add about a kilobyte per shard)."""
    size = torch.empty(0, dtype=DTYPES[dtype]).element_size()
    return n_seq * n_ctx * (4 + size * sum(widths.values()))


def _used(folder: Path) -> int:
    """Bytes of the store files in `folder` (what overwriting it frees)."""
    files = [folder / MANIFEST, *folder.glob("shard-*.safetensors*")]
    return sum(f.stat().st_size for f in files if f.is_file())


def check_free_space(folder: Path, nbytes: int, overwrite: bool = False) -> None:
    """StoreError unless the file system of `folder` (or its nearest existing parent) has
    `nbytes` free, counting the store files an overwrite would delete."""
    at = folder
    while not at.exists() and at != at.parent:
        at = at.parent
    free = shutil.disk_usage(at).free + (_used(folder) if overwrite and folder.is_dir() else 0)
    if nbytes > free:
        raise StoreError(
            f"the store would write about {byte_size(nbytes)} to {folder} and "
            f"{byte_size(free)} is free there; free space, write elsewhere (--out), or store "
            "fewer tokens (--n-tokens), "
            "fewer hooks or float16 (--store-dtype)"
        )


def write_store(
    model: Any,
    hook_names: Sequence[str],
    batches: Iterable[Tensor],
    out: str | Path,
    *,
    n_batches: int | None = None,
    n_tokens: int | None = None,
    dtype: str = "float32",
    shard_tokens: int = 65_536,
    model_name: str | None = None,
    revision: str | None = None,
    source: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> ActivationStore:
    """Run `model` once per token batch [batch, n_ctx] and store every hook's activations.

    model: a loaded TransformerBridge / LeanModel; one forward per batch serves all hooks,
        stopped after the last of them.
    hook_names: [batch, pos, d] hooks (residual stream, attn_out, mlp_out, mlp.hook_post, ...).
    batches: token batches [batch, n_ctx]; the store keeps them in this order.
    n_batches, n_tokens: stop after this many batches, or after the first whole batch reaching
        n_tokens tokens (at most one of them; neither: until `batches` ends).
    dtype: the stored activations' dtype (float32, float16, bfloat16).
    shard_tokens: tokens per shard (whole sequences; the last shard may hold fewer).
    model_name: the model's name in the manifest (default: its cfg.model_name); training from
        the store checks it against TrainConfig.model. revision: its checkpoint, recorded.
    source: what the batches are, recorded in the manifest (e.g. dataset, column, seed).
    overwrite: replace a store already in `out` (otherwise a StoreError).
    """
    if dtype not in DTYPES:
        raise StoreError(f"unknown store dtype {dtype!r}; use one of {sorted(DTYPES)}")
    if n_batches is not None and n_tokens is not None:
        raise ValueError("pass n_batches or n_tokens, not both")
    if (n_batches is not None and n_batches < 1) or (n_tokens is not None and n_tokens < 1):
        raise ValueError("n_batches and n_tokens must be >= 1")
    lean = as_lean(model)
    hooks = list(dict.fromkeys(hook_names))
    if not hooks:
        raise StoreError("no hooks to store")
    widths = {h: hook_width(lean, h) for h in hooks}
    folder = Path(out)
    it = iter(batches)
    first = next(it, None)
    if first is None:
        raise StoreError("no token batches to store")
    if first.ndim == 2:  # a bad shape is named below
        b, T = first.shape
        planned = b * (n_batches or -(-(n_tokens or 0) // (b * T)))  # whole batches
        if planned:  # 0: neither n_batches nor n_tokens, the size is unknown
            check_free_space(folder, store_bytes(planned, T, widths, dtype), overwrite)
    _prepare_folder(folder, overwrite)
    writer: _ShardWriter | None = None
    n_ctx = n_seq = done = 0
    with progress_bar(progress) as bar:
        task = bar.add_task(f"store {len(hooks)} hook(s)", total=n_tokens, stats="")
        for toks in itertools.chain([first], it):
            if toks.ndim != 2 or toks.dtype.is_floating_point or (n_ctx and toks.shape[1] != n_ctx):
                raise StoreError(
                    f"token batches must be integer [batch, n_ctx] of one n_ctx; got "
                    f"{toks.dtype} {tuple(toks.shape)} after {n_seq} sequences of {n_ctx}"
                )
            if writer is None:
                n_ctx = int(toks.shape[1])
                writer = _ShardWriter(folder, max(1, shard_tokens // n_ctx))
                if n_batches is not None:
                    bar.update(task, total=n_batches * toks.numel())
            toks = toks.to(lean.W_E.device)
            acts = collect_many(lean, toks, hooks)
            writer.add(
                {"tokens": toks.to("cpu", torch.int32)}
                | {h: a.to("cpu", DTYPES[dtype]) for h, a in acts.items()}
            )
            n_seq, done = n_seq + toks.shape[0], done + 1
            bar.update(task, advance=toks.numel(), stats=f"{n_seq} sequences")
            if done == n_batches or (n_tokens is not None and n_seq * n_ctx >= n_tokens):
                break
    assert writer is not None
    writer.close()
    if (n_batches is not None and done < n_batches) or (n_tokens or 0) > n_seq * n_ctx:
        asked = f"{n_batches} batches" if n_batches is not None else f"{n_tokens} tokens"
        warnings.warn(
            f"the token batches ended after {done} batches ({n_seq * n_ctx} tokens), short of "
            f"the {asked} asked for; the store at {folder} holds what there was",
            stacklevel=2,
        )
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "model": model_name or str(getattr(lean.cfg, "model_name", "")),
        "revision": revision,
        "hooks": widths,
        "dtype": dtype,
        "token_dtype": "int32",
        "n_ctx": n_ctx,
        "n_seq": n_seq,
        "n_tokens": n_seq * n_ctx,
        "special_ids": special_ids(lean),
        "source": source,
        "shards": writer.shards,
    }
    write_json(folder / MANIFEST, manifest, indent=2)
    return ActivationStore(folder)


class ActivationStore:
    """A store written by `write_store`, reopened: the manifest is checked at once, each shard's
    size before it is read; activations are read a batch at a time."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        file = self.path / MANIFEST
        if not file.is_file():
            raise StoreError(
                f"no {MANIFEST} in {self.path}: not an activation store, or its writing did not "
                f"finish; {_REWRITE}"
            )
        try:
            manifest = json.loads(file.read_text())
        except json.JSONDecodeError as e:
            raise StoreError(f"{file} is not valid JSON ({e}); {_REWRITE}") from e
        missing = [k for k in _KEYS if k not in manifest]
        if manifest.get("format") != FORMAT or missing:
            raise StoreError(f"{file} is not a {FORMAT} manifest (missing {missing}); {_REWRITE}")
        if manifest["version"] > VERSION:
            raise StoreError(f"{file} has format version {manifest['version']}; upgrade mechscope")
        sizes = [int(s["n_seq"]) for s in manifest["shards"]]
        if sum(sizes) != manifest["n_seq"]:
            raise StoreError(
                f"{file}: the shards hold {sum(sizes)} sequences, the manifest says "
                f"{manifest['n_seq']}; {_REWRITE}"
            )
        self.manifest: dict[str, Any] = manifest
        self._starts = [sum(sizes[:i]) for i in range(len(sizes))]
        for i in range(len(sizes)):
            self._check_size(i)

    @property
    def model(self) -> str:
        return str(self.manifest["model"])

    @property
    def hooks(self) -> dict[str, int]:
        """Hook name -> activation width d."""
        return dict(self.manifest["hooks"])

    @property
    def n_ctx(self) -> int:
        return int(self.manifest["n_ctx"])

    @property
    def n_tokens(self) -> int:
        return int(self.manifest["n_tokens"])

    @property
    def special_ids(self) -> list[int]:
        return list(self.manifest["special_ids"])

    def __len__(self) -> int:
        """Number of stored sequences."""
        return int(self.manifest["n_seq"])

    def _check_size(self, i: int) -> Path:
        shard = self.manifest["shards"][i]
        file = self.path / shard["file"]
        if not file.is_file():
            raise StoreError(f"shard {file} is missing; {_REWRITE}")
        size = file.stat().st_size
        if size != shard["bytes"]:
            raise StoreError(
                f"shard {file} has {size} bytes, the manifest says {shard['bytes']}: the file is "
                f"truncated or corrupt (an interrupted write or copy?); {_REWRITE}"
            )
        return file

    def _open(self, i: int, hook: str) -> Any:
        """The safetensors handle of shard i, its `tokens` and `hook` shapes checked."""
        file = self._check_size(i)
        try:
            handle = safe_open(str(file), framework="pt")
        except Exception as e:  # safetensors raises its own error type for a bad header
            raise StoreError(f"shard {file} cannot be read ({e}); {_REWRITE}") from e
        n, keys = self._n_seq(i), set(handle.keys())
        for key, shape in (("tokens", [n, self.n_ctx]), (hook, [n, self.n_ctx, self.hooks[hook]])):
            got = handle.get_slice(key).get_shape() if key in keys else None
            if got != shape:
                raise StoreError(
                    f"shard {file} holds {key} of shape {got}, not {shape}; {_REWRITE}"
                )
        return handle

    def batches(
        self, hook: str, batch_size: int, start: int = 0
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """(tokens [b, n_ctx] int64, activations [b, n_ctx, d]) of `hook`, in stored order, from
        sequence `start`; b = batch_size except maybe in the last batch. One shard is open at a
        time and only the batch's slices are read."""
        if hook not in self.hooks:
            raise StoreError(
                f"hook {hook!r} is not in the store at {self.path}; it holds {sorted(self.hooks)}"
            )
        if batch_size < 1 or start < 0:
            raise ValueError(f"need batch_size >= 1 and start >= 0, got {batch_size}, {start}")
        open_shard: dict[int, Any] = {}
        for a in range(start, len(self), batch_size):
            b = min(a + batch_size, len(self))
            toks, acts = [], []
            for i in range(bisect.bisect_right(self._starts, a) - 1, len(self._starts)):
                lo, hi = max(a, self._starts[i]), min(b, self._starts[i] + self._n_seq(i))
                if lo >= hi:
                    break
                if i not in open_shard:
                    open_shard = {i: self._open(i, hook)}
                lo, hi = lo - self._starts[i], hi - self._starts[i]
                toks.append(open_shard[i].get_slice("tokens")[lo:hi])
                acts.append(open_shard[i].get_slice(hook)[lo:hi])
            yield torch.cat(toks).long(), torch.cat(acts)

    def _n_seq(self, i: int) -> int:
        return int(self.manifest["shards"][i]["n_seq"])

    def verify(self) -> None:
        """StoreError naming the first shard whose size or sha256 differs from the manifest."""
        for i, shard in enumerate(self.manifest["shards"]):
            file = self._check_size(i)
            if _sha256(file) != shard["sha256"]:
                raise StoreError(f"shard {file} does not match its sha256; {_REWRITE}")
