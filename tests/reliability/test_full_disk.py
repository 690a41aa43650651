"""A disk that fills part-way through a write: the command stops with one line naming the
file, and every file it leaves is whole (the half-written one is removed, an older one kept)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mechscope.files


def _fill_disk_after(monkeypatch, n_ok: int) -> list[str]:
    """Let `n_ok` writes through, then make each write stop half-way with ENOSPC; returns the
    list of the temporary paths written (whole or not)."""
    real = mechscope.files._write_temp
    seen: list[str] = []

    def write(fn, tmp: str) -> None:
        seen.append(tmp)
        real(fn, tmp)
        if len(seen) <= n_ok:
            return
        p = Path(tmp)
        for f in [p] if p.is_file() else [q for q in p.rglob("*") if q.is_file()]:
            with f.open("r+b") as fh:
                fh.truncate(f.stat().st_size // 2)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(mechscope.files, "_write_temp", write)
    return seen


def _whole(path: Path) -> None:
    """Fail unless the file at `path` reads back completely as its kind."""
    if path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".safetensors":
        load_file(str(path))
    elif path.suffix == ".pt":
        torch.load(path, weights_only=True)
    elif path.suffix == ".html":
        assert path.read_text().rstrip().endswith("</html>"), path
    elif path.suffix == ".dot":
        assert path.read_text().rstrip().endswith("}"), path


def _all_whole(folder: Path) -> list[Path]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    for p in files:
        _whole(p)
    return files


CASES = [
    pytest.param(["run-task", "--n", "4", "--json", "{out}/rt.json"], 0, id="run-task --json"),
    pytest.param(["patch", "-c", "resid_pre", "--n", "2", "--out", "{out}"], 1, id="patch"),
    pytest.param(["acdc", "--tracr", "reverse", "--out", "{out}/circuit"], 1, id="acdc"),
    pytest.param(
        [
            *["sae", "train", "--hook", "blocks.0.hook_resid_post", "--steps", "4"],
            *["--checkpoint-every", "2", "--batch-size", "2", "--expansion", "1"],
            *["--eval-batches", "1", "--out", "{out}"],
        ],
        1,
        id="sae train",
        marks=pytest.mark.slow,  # it tokenizes the training corpus first
    ),
    pytest.param(
        ["evolution", "run", "--batches", "2", "--batch-size", "2", "--no-graph", "--out", "{out}"],
        1,
        id="evolution run",
    ),
]


@pytest.mark.parametrize(("line", "n_ok"), CASES)
def test_disk_fills_mid_write(
    line, n_ok, tmp_path, mechscope_cli, failed_cleanly, leftovers, monkeypatch
) -> None:
    """n_ok writes go through, the next stops half-way with ENOSPC."""
    seen = _fill_disk_after(monkeypatch, n_ok)
    result = mechscope_cli([a.format(out=tmp_path / "out") for a in line])
    failed_cleanly(result, "no space left on the device", folder=tmp_path)
    assert len(seen) == n_ok + 1  # it stopped at the first failed write
    files = _all_whole(tmp_path)
    assert len(files) == n_ok, files  # the writes before it, whole; the failed one, gone
    assert not leftovers(tmp_path)


def test_an_older_file_survives_a_failed_rewrite(tmp_path, monkeypatch) -> None:
    path = tmp_path / "result.json"
    mechscope.files.write_json(path, {"old": 1})
    _fill_disk_after(monkeypatch, 0)
    with pytest.raises(mechscope.files.OutputError, match="no space left"):
        mechscope.files.write_json(path, {"new": list(range(1000))})
    assert json.loads(path.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_a_folder_write_fails_whole(tmp_path, monkeypatch) -> None:
    """`write_files` (save_pretrained and the like): nothing lands when the disk fills."""

    def save(folder: Path) -> None:
        (folder / "a.json").write_text('{"a": 1}')
        (folder / "b.json").write_text('{"b": 2}')

    _fill_disk_after(monkeypatch, 0)
    with pytest.raises(mechscope.files.OutputError, match="no space left"):
        mechscope.files.write_files(tmp_path / "model", save)
    assert list(tmp_path.rglob("*")) == [tmp_path / "model"]
