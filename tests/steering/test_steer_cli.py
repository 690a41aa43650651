"""`mechscope steer`: side-by-side output, the JSON it writes, and bad input refused (exit 2)
before any generation."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import mechscope.steering
from mechscope.cli import app
from mechscope.sae import resolve
from mechscope.steering import FeatureEdit, generate

runner = CliRunner()
SAE = "blocks.0.hook_resid_post__local__l1-2"
HOOK = "blocks.0.hook_resid_post"


def test_steer_prints_both_runs_and_writes_them(tmp_path, gpt2_2l, tokenizer):
    out = tmp_path / "steer.json"
    args = ["steer", "--prompt", "def foo(", "--sae", SAE, "--clamp", "11=10"]
    r = runner.invoke(app, [*args, "--max-new-tokens", "6", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "unsteered" in r.output and "feature 11 = 10" in r.output and "KL" in r.output
    saved = json.loads(out.read_text())
    ids = torch.tensor(
        [[tokenizer.bos_token_id, *tokenizer.encode("def foo(", add_special_tokens=False)]]
    )
    sae = resolve(SAE, "code-2l")[1]
    steered = generate(gpt2_2l, ids, [FeatureEdit(HOOK, sae, 11, "clamp", 10.0)], 6)
    assert saved["steered"]["tokens"] == steered.tokens.tolist()
    assert saved["unsteered"]["tokens"] == generate(gpt2_2l, ids, [], 6).tokens.tolist()
    assert saved["steered"]["text"] == steered.texts(tokenizer)[0]


def test_steer_with_transcoder_features(tmp_path, gpt2_2l, tokenizer):
    """--tc-edit clamps / scales a bundled transcoder feature at every token: the steered run is
    generate() with the same TranscoderEdits."""
    from mechscope.graphs import load_bundled_transcoders
    from mechscope.steering import TranscoderEdit

    out = tmp_path / "steer.json"
    args = ["steer", "--prompt", "def foo(", "--tc-edit", "1:9=6", "--tc-edit", "0:17*0"]
    r = runner.invoke(app, [*args, "--max-new-tokens", "5", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "transcoder feature 9 of layer 1 = 6" in r.output and "x 0" in r.output
    ids = torch.tensor(
        [[tokenizer.bos_token_id, *tokenizer.encode("def foo(", add_special_tokens=False)]]
    )
    tcs = load_bundled_transcoders("code-2l")
    ivs = [TranscoderEdit(tcs[1], 9, "clamp", 6.0), TranscoderEdit(tcs[0], 17, "scale", 0.0)]
    steered = generate(gpt2_2l, ids, ivs, 5)
    saved = json.loads(out.read_text())
    assert saved["steered"]["tokens"] == steered.tokens.tolist()
    assert saved["steered"]["tokens"] != saved["unsteered"]["tokens"]


def test_steer_with_a_direction_file_sampled(tmp_path):
    vec = tmp_path / "dir.pt"
    torch.save(torch.randn(128, generator=torch.Generator().manual_seed(0)), vec)
    args = ["steer", "--prompt", "import ", "--add-direction", f"{vec}:4@{HOOK}"]
    args += ["--ablate-direction", f"{vec}@blocks.1.hook_resid_pre", "--positions", "new"]
    r = runner.invoke(app, [*args, "--max-new-tokens", "4", "--temperature", "0.8", "--seed", "2"])
    assert r.exit_code == 0, r.output
    assert "add 4 x direction" in r.output and "ablate direction" in r.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sae", SAE, "--clamp", "3=1@blocks.5.hook_resid_post"], "Its hooks"),
        (["--sae", SAE, "--clamp", "5000=1"], "out of range"),
        (["--sae", SAE, "--clamp", "3=1@blocks.1.hook_resid_post"], "trained at"),
        (["--sae", SAE, "--clamp", "3"], "FEATURE=VALUE"),
        (["--clamp", "3=1@" + HOOK], "give --sae"),
        (["--add-direction", "DIR:2@" + HOOK], "width"),
        (["--add-direction", "nofile.pt:2@" + HOOK], "does not exist"),
        (["--add-direction", "DIR:2@" + HOOK, "--prompt", "x = 1\n" * 60], "context"),
        (["--add-direction", "DIR:2@" + HOOK, "--top-p", "2"], "--top-p"),
        (["--add-direction", "DIR:2@" + HOOK, "--temperature", "-1"], "--temperature"),
        (["--add-direction", "DIR:2@" + HOOK, "--json", "TMP"], "is a folder"),
        (["--tc-edit", "1:5000=1"], "out of range"),
        (["--tc-edit", "5:3=1"], "no transcoder for layer 5"),
        (["--tc-edit", "1:3"], "LAYER:FEATURE=VALUE"),
        (["--tc-edit", "1=3"], "LAYER:FEATURE=VALUE"),
        (["--tc-edit", "1:3=1", "--transcoders", "TMP"], "neither a circuit-tracer"),
        ([], "nothing to steer"),
    ],
)
def test_steer_bad_input_exits_2_before_generating(extra, message, tmp_path, monkeypatch):
    vec = tmp_path / "dir.pt"
    torch.save(torch.ones(64), vec)  # code-2l's d_model is 128
    extra = [a.replace("DIR", str(vec)).replace("TMP", str(tmp_path)) for a in extra]

    def refuse(*a, **k):
        raise AssertionError("generate ran on bad input")

    monkeypatch.setattr(mechscope.steering, "generate", refuse)
    prompt = [] if "--prompt" in extra else ["--prompt", "def foo("]
    r = runner.invoke(app, ["steer", *prompt, *extra])
    assert r.exit_code == 2, r.output
    assert message in r.output
