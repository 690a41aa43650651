"""The offline text corpus: the Python standard library's own source, found with `sysconfig`.

It is on every machine that runs Python, so bundled models can be rebuilt anywhere, offline.
Test suites are left out (they are large, repetitive and not representative code).
"""

from __future__ import annotations

import hashlib
import sysconfig
import zlib
from pathlib import Path
from typing import Any

_SKIP_PARTS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


def stdlib_root() -> Path:
    """Folder of the running interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path | None = None) -> list[Path]:
    """All `.py` files of the standard library outside test folders, sorted (deterministic)."""
    root = root or stdlib_root()
    files = [
        p for p in root.rglob("*.py") if not _SKIP_PARTS.intersection(p.relative_to(root).parts)
    ]
    if not files:
        raise FileNotFoundError(
            f"No Python source found under {root}. mechscope's offline corpus is the standard "
            "library's source; install a Python that ships its .py files."
        )
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def is_heldout(path: Path, fraction: float = 0.05) -> bool:
    """Deterministic held-out split by a hash of the file's relative name."""
    name = path.name if not path.is_absolute() else path.relative_to(stdlib_root()).as_posix()
    return (zlib.crc32(name.encode()) % 10_000) < fraction * 10_000


def stdlib_texts(split: str = "train", root: Path | None = None) -> list[str]:
    """Source texts of the stdlib files in `split` ("train", "heldout" or "all")."""
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"split must be 'train', 'heldout' or 'all', got {split!r}")
    out = []
    for p in stdlib_files(root):
        if split != "all" and is_heldout(p) != (split == "heldout"):
            continue
        out.append(p.read_text(encoding="utf-8", errors="replace"))
    return out


_ENCODED: dict[tuple[str, str], list[list[int]]] = {}  # (tokenizer fingerprint, split) -> ids


def encoded_stdlib(tokenizer: Any, split: str = "train") -> list[list[int]]:
    """Token ids (no special tokens) of each non-empty stdlib file in `split`.

    Encoding the corpus takes seconds, so a fast tokenizer's result is kept for the process,
    keyed by a hash of its serialised vocabulary and rules (equal tokenizers share it; the last
    four are kept). Callers must not modify the lists.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    key = None
    if backend is not None:
        key = (hashlib.sha256(backend.to_str().encode()).hexdigest(), split)
        if key in _ENCODED:
            return _ENCODED[key]
    enc = tokenizer(stdlib_texts(split), add_special_tokens=False)["input_ids"]
    ids = [x for x in enc if x]
    if key is not None:
        if len(_ENCODED) >= 4:
            del _ENCODED[next(iter(_ENCODED))]
        _ENCODED[key] = ids
    return ids
