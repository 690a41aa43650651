"""The offline text corpus: the Python standard library's own source, found with `sysconfig`.

It is on every machine that runs Python, so bundled models can be rebuilt anywhere, offline.
Test suites are left out (they are large, repetitive and not representative code).
"""

from __future__ import annotations

import sysconfig
import zlib
from pathlib import Path

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
