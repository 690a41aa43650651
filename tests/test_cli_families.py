"""Every `mechscope` command a user runs on a model folder works on toy models of other families
(Llama: RMSNorm, rotary, SwiGLU, grouped-query attention; GPT-NeoX: parallel blocks, partial
rotary), and bad models and hook names fail with one clear line, writing nothing."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import mechscope
from mechscope.cli import app
from mechscope.models.toy import save_toy

runner = CliRunner()


def _ok(command: str, *paths: object) -> str:
    """Run `mechscope COMMAND PATHS...` (command split on spaces); assert it exits 0."""
    args = [*command.split(), *map(str, paths)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, f"{args}: {r.output}\n{r.exception!r}"
    return r.output


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
def test_every_command_runs_on_a_toy_folder(family, toy_dir, tmp_path):
    model = toy_dir(family)

    run = tmp_path / "task.json"
    _ok("run-task --task ioi --n 4 --model", model, "--json", run)
    assert json.loads(run.read_text())["n_prompts"] == 4

    patch = tmp_path / "patch"
    _ok("patch --task ioi --n 4 -c z -c v --model", model, "--out", patch)
    written = {p.name for p in patch.iterdir()}
    assert {f"{c}_denoising.{s}" for c in "zv" for s in ("json", "safetensors", "html")} <= written

    saes: list[object] = []
    for layer in (0, 1):  # one SAE per layer, for `evolution run`
        hook = f"blocks.{layer}.hook_resid_post"
        tiny = "--steps 4 --batch-size 2 --expansion 1 --eval-batches 1 --checkpoint-every 2"
        _ok(f"sae train --hook {hook} {tiny} --model", model, "--out", tmp_path / "sae")
        (folder,) = (tmp_path / "sae").glob(hook + "__*")
        assert (folder / "cfg.json").exists()
        saes += ["--sae", folder]

    directions = tmp_path / "directions"
    tiny = "-f isotropic --batches 1 --batch-size 2 --lengths 1,4"
    _ok(
        f"directions sweep --hook blocks.1.hook_resid_post {tiny} --model",
        model,
        "--out",
        directions,
    )
    assert len(list(directions.glob("sweep_*.json"))) == 1

    evolution = tmp_path / "evolution"
    tiny = "--batches 1 --batch-size 2 --min-support 0 --device cpu"
    _ok(f"evolution run {tiny} --model", model, *saes, "--out", evolution)
    assert (evolution / "graph.json").exists()

    regions = tmp_path / "regions"
    _ok("regions run --n-prompts 2 --n-steps 3 --model", model, "--out", regions)
    assert (regions / f"{model.name}@main.json").exists()

    acdc = tmp_path / "acdc"  # GQA (llama) and parallel blocks (gpt_neox) in the edge graph
    _ok("acdc --task ioi --n 4 --n-test 4 --tau 0.001 --model", model, "--out", acdc)
    circuit = json.loads(acdc.with_suffix(".json").read_text())
    assert circuit["graph"]["n_kv_heads"] == (2 if family == "llama" else 4)
    assert circuit["graph"]["parallel"] == (family == "gpt_neox")


def _bloom(folder):
    """A tiny Bloom (ALiBi positions): TransformerLens loads it, mechscope does not declare it."""
    import shutil

    import transformers

    from mechscope.artefacts import TOKENIZER_DIR

    cfg = transformers.BloomConfig(
        vocab_size=4096, hidden_size=64, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0
    )
    transformers.BloomForCausalLM(cfg).save_pretrained(folder)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZER_DIR / f, folder / f)
    return folder


def _error_line(r) -> str:
    """The one `Error: ...` line of a failed command (exit 2, no traceback)."""
    assert r.exit_code == 2, r.output
    assert isinstance(r.exception, SystemExit) and "Traceback" not in r.output
    # (the progress bars of loading share the stream, without line breaks)
    (line,) = [ln[ln.index("Error:") :] for ln in r.output.splitlines() if "Error:" in ln]
    return line


@pytest.mark.parametrize(
    ("make", "says"),
    [  # refused by LeanModel: an undeclared type, a declared type with an undeclared option
        (_bloom, ("'bloom' is not declared", "gpt_neox, gptj, llama")),
        (lambda f: save_toy("gpt2", f, scale_attn_by_inverse_layer_idx=True), ("layer scaling",)),
        # refused by TransformerLens's bridge before mechscope sees it
        (lambda f: save_toy("phi", f, qk_layernorm=True), ("cannot load", "q_layernorm")),
    ],
    ids=["bloom", "gpt2-layer-scaling", "phi-qk-layernorm"],
)
def test_refused_architecture_fails_in_one_line_writing_nothing(make, says, tmp_path):
    model = make(tmp_path / "model")
    out = tmp_path / "out"
    r = runner.invoke(app, ["patch", "--model", str(model), "--n", "2", "--out", str(out)])
    line = _error_line(r)
    assert all(s in line for s in says), line
    assert not out.exists()


def test_hook_of_another_family_lists_this_models_hooks(toy_dir, tmp_path):
    from mechscope.models.lean import LeanModel

    hook = "blocks.0.attn.hook_rot_q"
    assert hook in LeanModel(mechscope.load_model(toy_dir("llama"))).hook_names()  # rotary
    out = tmp_path / "sae"
    args = ["sae", "train", "--model", str(toy_dir("gpt2")), "--hook", hook, "--steps", "2"]
    line = _error_line(runner.invoke(app, [*args, "--out", str(out)]))
    assert f"unknown hook name(s) '{hook}'" in line
    assert "blocks.<0-1>.{hook_resid_pre," in line and "hook_resid_post" in line, line
    assert "hook_embed" in line and "hook_pos_embed" in line and "hook_rot_q" not in line[60:]
    assert not out.exists()
