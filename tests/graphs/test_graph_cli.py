"""`mechscope sae train --kind transcoder` then `mechscope graph` on code-2l, end to end."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mechscope.cli import app

runner = CliRunner()


@pytest.mark.slow
def test_transcoders_then_graph(tmp_path) -> None:
    tc = tmp_path / "tc"
    args = ["sae", "train", "--kind", "transcoder", "--model", "code-2l", "--hook", "all"]
    args += ["--steps", "60", "--batch-size", "2", "--expansion", "2", "--eval-batches", "1"]
    r = runner.invoke(app, [*args, "--out", str(tc)])
    assert r.exit_code == 0, r.output
    assert "every MLP replaced" in r.output
    assert (tc / "circuit-tracer" / "config.yaml").exists() and (tc / "eval.json").exists()
    out = tmp_path / "g.json"
    prompt = "def area(width, height):\n    return width *"
    for folder in (tc, tc / "circuit-tracer"):
        r = runner.invoke(
            app, ["graph", "--transcoders", str(folder), "--prompt", prompt, "--out", str(out)]
        )
        assert r.exit_code == 0, r.output
        data = json.loads(out.read_text())
        assert data["metadata"]["prompt_tokens"][0] == "<|endoftext|>"
        kinds = {n["feature_type"] for n in data["nodes"]}
        assert {"embedding", "logit", "cross layer transcoder"} <= kinds and data["links"]
        assert "graph-data" in out.with_suffix(".html").read_text()
    base = ["graph", "--transcoders", str(tc), "--prompt", prompt, "--out", str(out)]
    r = runner.invoke(app, [*base, "--edit", "1:12:0=0", "--edit", "0:5:1=2.5"])
    assert r.exit_code == 0 and "graph predicts" in r.output, r.output
    r = runner.invoke(
        app, ["graph", "--transcoders", str(tc), "--prompt", prompt, "--edit", "1:12:99999=0"]
    )
    assert r.exit_code == 2 and "feature out of range" in r.output


def test_graph_defaults_to_the_bundled_transcoders(tmp_path) -> None:
    out = tmp_path / "g.json"
    r = runner.invoke(app, ["graph", "--prompt", "def f(x):", "--out", str(out)])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert data["metadata"]["prompt_tokens"][0] == "<|endoftext|>"
    assert {"embedding", "logit", "cross layer transcoder"} <= {
        n["feature_type"] for n in data["nodes"]
    }
    r = runner.invoke(app, ["graph", "--model", "code-4l", "--prompt", "x", "--out", str(out)])
    assert r.exit_code == 2 and "no bundled transcoders for 'code-4l'" in r.output, r.output


def test_graph_bad_input(tmp_path) -> None:
    r = runner.invoke(
        app,
        ["graph", "--transcoders", str(tmp_path), "--prompt", "x", "--out", str(tmp_path / "g")],
    )
    assert r.exit_code == 2 and "neither a circuit-tracer config.yaml" in r.output
    r = runner.invoke(app, ["sae", "train", "--kind", "nope", "--hook", "all", "--steps", "1"])
    assert r.exit_code == 2 and "--kind must be sae or transcoder" in r.output
