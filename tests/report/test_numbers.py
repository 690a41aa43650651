"""The report's numbers are what the per-method CLIs give for the same settings.

Each section's printed rerun commands are run as they stand (outputs redirected to tmp) and their
result files compared with the numbers the quick demo wrote to its JSON.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from mechscope.report.demo import load_numbers


def _app() -> typer.Typer:
    """The `mechscope` sub-commands the report's rerun commands use, from their packages."""
    from mechscope.basis.cli import basis_app
    from mechscope.circuits.cli import acdc_command
    from mechscope.directions.cli import directions_app
    from mechscope.evolution.cli import evolution_app
    from mechscope.patching.cli import patch_command
    from mechscope.regions.cli import regions_app
    from mechscope.sae.cli import sae_app

    app = typer.Typer()
    app.command("patch")(patch_command)
    app.command("acdc")(acdc_command)
    for name, sub in [
        ("sae", sae_app),
        ("regions", regions_app),
        ("basis", basis_app),
        ("directions", directions_app),
        ("evolution", evolution_app),
    ]:
        app.add_typer(sub, name=name)
    return app


def _run(command: str, tmp: Path, **subs: str) -> str:
    command = command.split("#")[0]
    for k, v in subs.items():
        command = command.replace(k, v)
    args = shlex.split(command)
    assert args[0] == "mechscope"
    args = [a.replace("out/", f"{tmp}/", 1) if a.startswith("out/") else a for a in args[1:]]
    res = CliRunner().invoke(_app(), args)
    assert res.exit_code == 0, f"{command}\n{res.output}\n{res.exception!r}"
    return res.output


@pytest.fixture(scope="module")
def numbers(quick_demo):
    return load_numbers(quick_demo.json)["sections"]


def _close(a, b, tol: float = 1e-5) -> None:
    ta, tb = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    assert ta.shape == tb.shape
    assert torch.allclose(ta, tb, atol=tol, rtol=tol, equal_nan=True), (ta - tb).abs().max()


@pytest.mark.slow
def test_patching_matches_cli(numbers, tmp_path) -> None:
    from mechscope.patching import PatchResult

    sec = numbers["patching"]
    assert set(sec["numbers"]) == {"code-attn4", "code-2l", "code-llama-2l"}
    for cmd in sec["commands"]:
        _run(cmd, tmp_path)
    for model, results in sec["numbers"].items():
        for key, want in results.items():
            got = PatchResult.load(tmp_path / "patch" / model / key)
            assert got.clean == pytest.approx(want["clean"], abs=1e-6)
            assert got.corrupted == pytest.approx(want["corrupted"], abs=1e-6)
            _close(got.values.tolist(), want["values"])


@pytest.mark.slow
def test_circuits_match_cli(numbers, tmp_path) -> None:
    sec = numbers["circuits"]
    docstring, *tracr = sec["commands"]
    _run(docstring, tmp_path)
    got = json.loads((tmp_path / "acdc-docstring.json").read_text())
    want = sec["numbers"]["acdc"]
    assert got["edges"] == want["edges"] and got["heads"] == want["heads"]
    assert got["faithfulness"] == pytest.approx(want["faithfulness"], abs=1e-6)
    for cmd in tracr:
        name = cmd.split("--tracr ")[1].split()[0]
        nums = sec["numbers"][f"tracr_{name}"]
        tau, n_edges = f"{nums['taus'][1]:g}", nums["n_edges"][1]
        loop = re.fullmatch(r"for tau in ([^;]+); do (.+); done", cmd)  # one run of the loop
        assert loop is not None and tau in loop[1].split(), cmd
        _run(loop[2].replace("$tau", tau), tmp_path)
        got = json.loads((tmp_path / f"acdc-{name}" / f"tau-{tau}" / "circuit.json").read_text())
        assert got["n_edges"] == n_edges


@pytest.mark.slow
def test_saes_match_cli(numbers) -> None:
    from mechscope.sae.bundled import list_bundled

    sec = numbers["saes"]
    assert set(sec["numbers"]) == {"code-2l", "code-llama-2l"}
    for cmd in sec["commands"]:
        model = cmd.split("--model ")[1].split()[0]
        out = _run(cmd, Path("."))  # `sae list` prints the card's evaluations
        card = {e["name"]: e["evaluation"] for e in list_bundled(model)}
        assert sec["numbers"][model] == json.loads(json.dumps(card))
        for ev in card.values():
            assert f"{ev['l0']:.1f}" in out


@pytest.mark.slow
def test_directions_match_cli(numbers, tmp_path) -> None:
    sec = numbers["directions"]
    assert set(sec["numbers"]) == {"code-2l", "code-llama-2l"}
    for cmd in sec["commands"]:
        _run(cmd, tmp_path)
    for model, want in sec["numbers"].items():
        (path,) = (tmp_path / "directions" / model).glob("sweep_*.json")
        got = json.loads(path.read_text())
        _close(got["lengths"], want["lengths"])
        for fam, curve in want["curves"].items():
            rows = [r for r in got["rows"] if r["family"] == fam]
            rows.sort(key=lambda r: r["length"])
            _close([r["kl_mean"] for r in rows], curve)


@pytest.mark.slow
def test_evolution_matches_cli(numbers, tmp_path) -> None:
    from mechscope.evolution import EvolutionResult

    sec = numbers["evolution"]
    _run(sec["commands"][0], tmp_path)
    got = EvolutionResult.load(tmp_path / "evolution")
    assert got.n_tokens == sec["numbers"]["n_tokens"]
    assert json.loads(json.dumps(got.counts())) == sec["numbers"]["counts"]
    assert (tmp_path / "evolution.html").exists()


@pytest.mark.slow
def test_regions_match_cli(numbers, tmp_path) -> None:
    sec = numbers["regions"]
    assert {r["model"] for r in sec["numbers"]["rows"]} == {"code-2l", "code-4l", "code-llama-2l"}
    _run(sec["commands"][0], tmp_path)
    got = json.loads((tmp_path / "regions" / "sweep.json").read_text())
    want = sec["numbers"]["rows"]
    assert len(got["rows"]) == len(want)
    for g, w in zip(got["rows"], want, strict=True):
        assert (g["model"], g["revision"] or "main") == (w["model"], w["revision"])
        _close(g["sharpness"], [w["s_q25"], w["s_median"], w["s_q75"]])
        assert g["output_ratio"] == pytest.approx(w["output_ratio"], abs=1e-6)


@pytest.mark.slow
def test_basis_matches_cli(numbers, tmp_path) -> None:
    from mechscope.basis import BasisAnalysis

    sec = numbers["basis"]
    for cmd in sec["commands"]:
        _run(cmd, tmp_path)
    for name, want in sec["numbers"].items():
        got = BasisAnalysis.load(tmp_path / "basis" / name).summary()
        assert json.loads(json.dumps(got)) == want
