import json

from typer.testing import CliRunner

from mechscope.cli import app

runner = CliRunner()


def test_help_lists_commands():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("zoo", "run-task", "patch", "acdc", "sae", "directions", "evolution", "regions"):
        assert cmd in r.output
    assert "demo" in r.output and "basis" in r.output


def test_zoo_list_and_info():
    r = runner.invoke(app, ["zoo", "list"])
    assert r.exit_code == 0 and "code-attn4" in r.output
    r = runner.invoke(app, ["zoo", "info", "code-2l"])
    assert r.exit_code == 0 and "mechscope zoo build code-2l" in r.output


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
    assert r.exit_code == 2 and "Available tasks" in " ".join(r.output.split())
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
