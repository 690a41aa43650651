"""Every command that writes refuses an output path it cannot use at once, before any model
loads: a folder option given a file or a path under a file, a file option given a folder, a
folder it cannot write. One `Error:` line, exit 2, nothing made."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import mechscope.files

# (command line with {out} where the output goes, what the output must be)
FOLDER_OUTPUTS = {
    "patch": ["patch", "--out", "{out}"],
    "sae train": ["sae", "train", "--hook", "blocks.0.hook_resid_post", "--out", "{out}"],
    "sae sweep": ["sae", "sweep", "--out", "{out}"],
    "sae store": ["sae", "store", "--hooks", "all", "--n-tokens", "64", "--out", "{out}"],
    "sae build-bundled": ["sae", "build-bundled", "--out", "{out}"],
    "sweep": ["sweep", "examples/sweeps/sae.toml", "--backend", "serial", "--out", "{out}"],
    "regions run": ["regions", "run", "--out", "{out}"],
    "regions sweep": ["regions", "sweep", "--out", "{out}"],
    "regions semantic": ["regions", "semantic", "--out", "{out}"],
    "basis build": ["basis", "build", "modadd-1l", "--out", "{out}"],
    "basis analyse": ["basis", "analyse", "modadd-1l", "--out", "{out}"],
    "basis analyse --figures": ["basis", "analyse", "modadd-1l", "--figures", "{out}"],
    "evolution run": ["evolution", "run", "--out", "{out}"],
    "evolution run --checkpoint": ["evolution", "run", "--checkpoint", "{out}"],
    "directions sweep": ["directions", "sweep", "--out", "{out}"],
    "directions error": ["directions", "error", "--out", "{out}"],
    "directions features": ["directions", "features", "--out", "{out}"],
    "directions paper": ["directions", "paper", "--out", "{out}"],
    "zoo build": ["zoo", "build", "code-attn4", "--out", "{out}"],
}
FILE_OUTPUTS = {
    "run-task --json": ["run-task", "--json", "{out}"],
    "demo": ["demo", "--quick", "--out", "{out}"],
    "acdc": ["acdc", "--out", "{out}"],  # a stem: writes {out}.json, .dot, .html
    "evolution run --html": ["evolution", "run", "--html", "{out}"],
    "evolution page --html": ["evolution", "page", "{result}", "--html", "{out}"],
}


def _args(line: list[str], out: Path, tmp: Path) -> list[str]:
    return [a.format(out=out, result=tmp) for a in line]


def _quick(run, args: list[str]):
    t0 = time.perf_counter()
    result = run(args)
    assert time.perf_counter() - t0 < 5, "the output path must be checked before any work"
    return result


@pytest.mark.parametrize("name", list(FOLDER_OUTPUTS))
def test_folder_option_given_a_file(name, tmp_path, mechscope_cli, failed_cleanly) -> None:
    file = tmp_path / "taken"
    file.write_text("keep me")
    result = _quick(mechscope_cli, _args(FOLDER_OUTPUTS[name], file, tmp_path))
    failed_cleanly(result, str(file), "is a file", folder=tmp_path)
    assert file.read_text() == "keep me"


@pytest.mark.parametrize("name", list(FOLDER_OUTPUTS) + list(FILE_OUTPUTS))
def test_output_under_a_file(name, tmp_path, mechscope_cli, failed_cleanly) -> None:
    file = tmp_path / "taken"
    file.write_text("keep me")
    line = {**FOLDER_OUTPUTS, **FILE_OUTPUTS}[name]
    result = _quick(mechscope_cli, _args(line, file / "sub" / "out", tmp_path))
    failed_cleanly(result, f"{file}, which is a file", folder=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


@pytest.mark.parametrize("name", list(FILE_OUTPUTS))
def test_file_option_given_a_folder(name, tmp_path, mechscope_cli, failed_cleanly) -> None:
    folder = tmp_path / "taken"
    # acdc's --out is a stem: its JSON is the file that cannot be a folder
    (folder.with_name("taken.json") if name == "acdc" else folder).mkdir()
    result = _quick(mechscope_cli, _args(FILE_OUTPUTS[name], folder, tmp_path))
    failed_cleanly(result, "is a folder; give a file name", folder=tmp_path)


@pytest.mark.parametrize("name", ["patch", "sae train", "run-task --json", "demo"])
def test_unwritable_folder(name, tmp_path, mechscope_cli, failed_cleanly, monkeypatch) -> None:
    """A folder without write permission (simulated: tests may run as root, who writes
    anywhere)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real = mechscope.files.os.access
    monkeypatch.setattr(
        mechscope.files.os, "access", lambda p, mode: Path(p) != locked and real(p, mode)
    )
    line = {**FOLDER_OUTPUTS, **FILE_OUTPUTS}[name]
    result = _quick(mechscope_cli, _args(line, locked / "new" / "out", tmp_path))
    failed_cleanly(result, f"the folder {locked} is not writable", folder=tmp_path)
    assert not any(locked.iterdir())
