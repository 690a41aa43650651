import json

from typer.testing import CliRunner

from mechscope.cli import app

runner = CliRunner()


def test_help_lists_commands():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("zoo", "run-task", "patch", "acdc", "sae", "directions", "evolution", "sweep"):
        assert cmd in r.output
    assert "demo" in r.output and "basis" in r.output


def test_zoo_list_and_info():
    r = runner.invoke(app, ["zoo", "list"])
    assert r.exit_code == 0 and "code-attn4" in r.output
    r = runner.invoke(app, ["zoo", "info", "code-2l"])
    assert r.exit_code == 0 and "mechscope zoo build code-2l" in r.output
    r = runner.invoke(app, ["zoo", "list"], terminal_width=200)
    assert r.exit_code == 0 and "code-llama-2l" in r.output
    r = runner.invoke(app, ["zoo", "info", "code-llama-2l"])
    assert r.exit_code == 0 and "mechscope zoo build code-llama-2l" in r.output


def test_run_task_writes_json(tmp_path):
    out = tmp_path / "r.json"
    r = runner.invoke(
        app, ["run-task", "--model", "code-2l", "--task", "ioi", "--n", "8", "--json", str(out)]
    )
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert data["task"] == "ioi" and data["n_prompts"] == 8


def test_bad_inputs_exit_2_with_a_message():
    r = runner.invoke(app, ["run-task", "--model", "no-such-model-x", "--n", "2"])
    assert r.exit_code == 2 and "Bundled models" in " ".join(r.output.split())
    r = runner.invoke(app, ["run-task", "--model", "code-2l", "--task", "nope", "--n", "2"])
    assert r.exit_code == 2 and "choose one of docstring" in " ".join(r.output.split())
    r = runner.invoke(app, ["zoo", "info", "nope"])
    assert r.exit_code == 2 and "No bundled model" in " ".join(r.output.split())


def test_zoo_build_on_a_missing_gpu_says_what_to_do(monkeypatch, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    r = runner.invoke(
        app, ["zoo", "build", "code-attn4", "--device", "cuda", "--out", str(tmp_path)]
    )
    assert r.exit_code == 2 and "--device cpu" in " ".join(r.output.split())
    assert not any(tmp_path.iterdir())  # nothing written


def test_placement_options_reach_the_loader(tmp_path):
    base = ["run-task", "--model", "code-2l", "--task", "ioi", "--n", "8", "--json"]
    r = runner.invoke(app, [*base, str(tmp_path / "fp32.json")])
    assert r.exit_code == 0, r.output
    mapped = '{"transformer": "cpu", "lm_head": "cpu"}'
    args = [*base, str(tmp_path / "bf16.json"), "--device-map", mapped, "--dtype", "bfloat16"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    fp32, bf16 = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("fp32", "bf16"))
    assert bf16["clean"] != fp32["clean"]  # the bf16 weights were used ...
    assert abs(bf16["clean"] - fp32["clean"]) < 0.1 * abs(fp32["clean"])  # ... and are close
    r = runner.invoke(app, [*base, str(tmp_path / "x.json"), "--device-map", "{bad"])
    assert r.exit_code == 2 and "not valid JSON" in r.output
    r = runner.invoke(app, [*base, "x.json", "--device-map", '{"transformer": "disk"}'])
    assert r.exit_code == 2 and "not supported" in " ".join(r.output.split())
    r = runner.invoke(app, [*base, "x.json", "--device", "cpu", "--device-map", "cpu"])
    assert r.exit_code == 2 and "not both" in r.output
