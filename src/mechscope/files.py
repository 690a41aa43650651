"""Every file mechscope writes or reads back goes through here.

Writes are atomic: each file appears whole or not at all (a temporary file in the same folder,
renamed over the target; removed on any error, a full disk included). Output paths are checked
before the work (`check_writable_dir` / `check_writable_file`), and reads of results, weights
and checkpoints turn a truncated or corrupt file into the caller's error class, naming the file,
what is wrong with it and how to remake it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mechscope.errors import OutputError


def _write_temp(write: Callable[[str], Any], tmp: str) -> None:
    """The one place bytes reach the disk: `write(tmp)` (the fault-injection tests replace this
    to simulate a disk that fills part-way)."""
    write(tmp)


def atomic_write(path: Path, write: Callable[[str], Any]) -> None:
    """Call write(temporary path) in path's folder (made if missing), then rename it to path;
    on any error the temporary file is removed and `path` is left as it was. An OS error
    (full disk, read-only folder, a file where a folder should be) is raised as OutputError."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        os.close(fd)
    except OSError as e:
        raise OutputError(_why(path, e)) from e
    try:
        _write_temp(write, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(_why(path, e)) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _why(path: Path, e: OSError) -> str:
    """One line: which file could not be written, why, and what to do."""
    if e.errno == errno.ENOSPC:
        return f"cannot write {path}: no space left on the device; free space or write elsewhere"
    if isinstance(e, IsADirectoryError):
        return f"cannot write {path}: it is a folder; give a file name"
    if isinstance(e, (NotADirectoryError, FileExistsError)):
        return f"cannot write {path}: {_file_above(path) or path.parent} is a file, not a folder"
    return f"cannot write {path}: {e.strerror or e}; choose a writable folder"


def write_files(folder: Path, write: Callable[[Path], Any]) -> None:
    """Call write(temporary folder) beside `folder` (for libraries that write a folder of files,
    such as `save_pretrained`), then move each file it made into `folder`, each atomically; on
    any error nothing more is moved and the temporary folder is removed."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    except OSError as e:
        raise OutputError(_why(folder, e)) from e
    try:
        _write_temp(lambda t: write(Path(t)), str(tmp))
        for f in sorted(p for p in tmp.rglob("*") if p.is_file()):
            dst = folder / f.relative_to(tmp)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f, dst)
    except OSError as e:
        raise OutputError(_why(folder, e)) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: Path, text: str) -> None:
    """`text` as UTF-8 at `path`, atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path: Path, obj: Any, indent: int | None = 1) -> None:
    """`obj` as JSON at `path`, atomically."""
    write_text(path, json.dumps(obj, indent=indent))


def write_safetensors(
    path: Path, tensors: Mapping[str, Any], metadata: dict[str, str] | None = None
) -> None:
    """torch tensors {name: tensor} as a safetensors file at `path`, atomically."""
    from safetensors.torch import save_file

    atomic_write(path, lambda tmp: save_file(dict(tensors), tmp, metadata=metadata))


def write_torch(path: Path, obj: Any) -> None:
    """`torch.save(obj)` at `path`, atomically (training checkpoints with optimiser state)."""
    import torch

    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def write_figure(path: Path, fig: Any, include_plotlyjs: bool | str = True) -> None:
    """A plotly figure as a full HTML page at `path`, atomically (`include_plotlyjs`: True
    embeds plotly.js, "cdn" links to it)."""
    write_text(path, fig.to_html(include_plotlyjs=include_plotlyjs, full_html=True))


def copy_file(src: Path, dst: Path) -> None:
    """A copy of the file `src` at `dst`, atomically."""
    data = Path(src).read_bytes()
    atomic_write(dst, lambda tmp: Path(tmp).write_bytes(data))


def suffixed(stem: Path, suffix: str) -> Path:
    """`stem` with `suffix` appended: unlike `Path.with_suffix`, a stem with dots in its name
    (`sweep_code-2l_blocks.1.hook_resid_post`) keeps all of it."""
    stem = Path(stem)
    return stem.with_name(stem.name + suffix)


def _file_above(path: Path) -> Path | None:
    """The first existing ancestor of `path` if it is a file (so no folder can be made there)."""
    for p in Path(path).absolute().parents:
        if p.exists():
            return p if not p.is_dir() else None
    return None


def check_writable_dir(path: Path, option: str = "--out") -> None:
    """Raise OutputError unless `path` is a folder, or can be made as one, that this process
    can write into: call before the work so a bad output path fails at once."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path} is a file; give a folder (new or existing)")
    above = _file_above(path)
    if above is not None:
        raise OutputError(f"{option} {path} lies under {above}, which is a file, not a folder")
    existing = next(p for p in (path.absolute(), *path.absolute().parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {path}: the folder {existing} is not writable")


def check_writable_file(path: Path, option: str = "--out") -> None:
    """Raise OutputError unless a file can be written at `path` (not a folder, its folder
    writable or makeable): call before the work."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{option} {path} is a folder; give a file name")
    check_writable_dir(path.parent, option)


def _corrupt(
    path: Path, error: type[Exception], what: str, remake: str, cause: object
) -> Exception:
    lines = str(cause).strip().splitlines()
    detail = f" ({lines[0][:160]})" if lines else ""  # one line, whatever the library said
    return error(f"{path}: {what}{detail}. {remake}")


def _missing(path: Path, error: type[Exception], remake: str) -> Exception:
    return error(f"{path} does not exist. {remake}")


def read_json(path: Path, error: type[Exception], remake: str) -> Any:
    """The JSON at `path`; a missing, truncated or corrupt file raises `error` naming the file
    and saying how to remake it (`remake`: e.g. "rerun `mechscope evolution run`")."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path, error, remake)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _corrupt(path, error, "is truncated or not valid JSON", remake, e) from e


def read_safetensors(
    path: Path, error: type[Exception], remake: str, finite: bool = False
) -> dict[str, Any]:
    """The tensors {name: tensor} of the safetensors file at `path` (on the CPU); a missing,
    truncated or corrupt file, or (with `finite`, for weights) a float tensor holding NaN or
    inf, raises `error` naming the file and saying how to remake it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise _missing(path, error, remake)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise _corrupt(path, error, "is truncated or not a safetensors file", remake, e) from e
    if finite:
        check_finite(tensors, path, error, remake)
    return tensors


def check_finite(
    tensors: Mapping[str, Any], path: Path | str, error: type[Exception], remake: str
) -> None:
    """Raise `error` naming `path` and the first tensors holding NaN or inf (weights that would
    only give NaN metrics)."""
    import torch

    bad = [
        name
        for name, t in tensors.items()
        if isinstance(t, torch.Tensor)
        and t.is_floating_point()
        and t.device.type != "meta"  # offloaded weights of a split model: not loaded yet
        and not bool(t.isfinite().all())
    ]
    if bad:
        raise error(f"{path}: {', '.join(bad[:5])} hold NaN or inf values. {remake}")


def read_torch(path: Path, error: type[Exception], remake: str, map_location: Any = "cpu") -> Any:
    """`torch.load(path)` (weights_only) onto `map_location`; a missing, truncated or corrupt
    file raises `error` naming the file and saying how to remake it."""
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise _missing(path, error, remake)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # torch's refusal of bytes that are no checkpoint
        raise _corrupt(path, error, "is truncated or corrupt", remake, "not a checkpoint") from e
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as e:
        raise _corrupt(path, error, "is truncated or corrupt", remake, e) from e
