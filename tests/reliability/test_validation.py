"""Options are checked before any model loads: a bad value exits 2 with one line naming the option
and what it accepts, and no model is loaded; work too big for memory is refused with its
estimate."""

from __future__ import annotations

import socket
import time

import pytest
import typer
from typer.testing import CliRunner

import mechscope
from mechscope import validate as V
from mechscope.cli import app
from mechscope.errors import ModelLoadError, OptionError

runner = CliRunner()
TRAIN = ["sae", "train", "--hook", "blocks.0.hook_resid_post"]
STORE = ["sae", "store", "--hooks", "all", "--n-tokens", "100", "--out", "unused-store"]

CASES = [
    ([*TRAIN, "--coeff", "-1"], "--coeff must be a finite number >= 0, got -1"),
    ([*TRAIN, "--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    ([*TRAIN, "--lr", "inf"], "--lr must be a finite number > 0, got inf"),
    ([*TRAIN, "--eval-batches", "0"], "--eval-batches must be an integer >= 1, got 0"),
    ([*TRAIN, "--steps", "0"], "--steps must be an integer >= 1"),
    ([*TRAIN, "--arch", "topk"], "--arch topk needs --k"),
    ([*TRAIN, "--arch", "topk", "--k", "5000"], "--k must be an integer in [1, 1024], got 5000"),
    ([*TRAIN, "--arch", "jumprelu"], "choose one of standard, topk"),
    ([*TRAIN, "--loss", "l2"], "choose one of local, e2e, e2e_ds"),
    ([*TRAIN, "--batch-size", "10000000"], "lower --batch-size or --expansion"),
    (["sae", "sweep", "--coeffs", "1,-3"], "--coeffs takes finite numbers >= 0, got -3"),
    (["sae", "sweep", "--coeffs", "1,x"], "--coeffs takes comma-separated numbers"),
    (["sae", "sweep", "--arch", "topk", "--ks", "0"], "--ks takes finite integers >= 1"),
    (["sae", "sweep", "--mixture", "web"], "choose one of stdlib, model"),
    ([*STORE, "--dtype", "int8"], "choose one of float32, float16, bfloat16"),
    ([*STORE, "--shard-tokens", "0"], "--shard-tokens must be an integer >= 1"),
    (["sae", "eval", "some-folder", "--eval-batches", "0"], "--eval-batches must be an integer"),
    (["patch", "--direction", "sideways"], "choose one of denoising, noising, zero, mean"),
    (["patch", "--n", "0"], "--n must be an integer >= 1, got 0"),
    (["patch", "--memory-mb", "nan"], "--memory-mb must be a finite number > 0"),
    (["patch", "-c", "resid_pre", "-c", "nope"], "--component 'nope' is unknown"),
    (["patch", "--positions", "some"], "choose one of each, all"),
    (["patch", "--seed", "-1"], "--seed must be an integer in [0, 4294967295]"),
    (["patch", "--task", "sorting"], "choose one of docstring"),
    (["acdc", "--tau", "nan"], "--tau must be a finite number >= 0"),
    (["acdc", "--k", "0"], "--k must be an integer >= 1"),
    (["acdc", "--ablation", "mean"], "choose one of resample, zero"),
    (["acdc", "--method", "greedy"], "choose one of acdc, acdc-reference, eap, eap-ig"),
    (["acdc", "--n-test", "0"], "--n-test must be an integer >= 1"),
    (["acdc", "--batch-size", "0"], "--batch-size must be an integer >= 1"),
    (["run-task", "--n", "0"], "--n must be an integer >= 1"),
    (["run-task", "--metric", "acc"], "choose one of logit_diff, logprob, prob, kl"),
    (["run-task", "--dtype", "float8_e4m3fn"], "choose one of float32, float16, bfloat16"),
    (["zoo", "build", "code-attn4", "--steps", "0"], "--steps must be an integer >= 1"),
    (["zoo", "build", "code-9l"], "NAME 'code-9l' is unknown; choose one of tokenizer"),
    (["evolution", "run", "--tau", "2"], "--tau must be a finite number in [-1, 1], got 2"),
    (["evolution", "run", "--rel-threshold", "-0.1"], "--rel-threshold must be a finite"),
    (["evolution", "run", "--measure", "mi"], "choose one of pearson, cosine"),
    (["evolution", "run", "--batches", "0"], "--batches must be an integer >= 1"),
    (["evolution", "run", "--serve", "--port", "70000"], "--port must be an integer in [1, 65535]"),
    (
        ["evolution", "page", "x", "--serve", "--port", "0"],
        "--port must be an integer in [1, 65535]",
    ),
    (["directions", "sweep", "--family", "sideways"], "--family 'sideways' is unknown"),
    (["directions", "sweep", "--lengths", "1,nan"], "--lengths takes finite numbers >= 0"),
    (["directions", "error", "--batches", "0"], "--batches must be an integer >= 1"),
    (["directions", "paper", "--abs-jitter", "-1"], "--abs-jitter must be a finite number >= 0"),
    (["directions", "features", "--pool", "half"], "choose one of active, inactive, dead"),
    (["regions", "run", "--n-steps", "100000000"], "lower --n-steps or --n-prompts"),
    (["regions", "run", "--n-steps", "1"], "--n-steps must be an integer >= 2, got 1"),
    (["regions", "run", "--layer", "7"], "--layer must be an integer in [-1, 3], got 7"),
    (["regions", "run", "--path", "zigzag"], "choose one of linear, arc, slerp"),
    (["regions", "run", "--read", "probs"], "choose one of normalized, logits"),
    (["regions", "run", "--threshold", "0"], "--threshold must be a finite number > 0"),
    (["regions", "sweep", "--n-prompts", "1"], "--n-prompts must be an integer >= 2"),
    (["regions", "semantic", "--n-prompts", "10000"], "lower --n-steps or --n-prompts"),
    (["basis", "analyse", "digits-mlp", "--split", "val"], "choose one of train, test, all"),
    (["basis", "analyse", "digits-mlp", "--resolution", "0"], "--resolution must be a finite"),
    (["basis", "analyse", "digits-mlp", "--batch-size", "0"], "--batch-size must be an integer"),
    (["basis", "build", "mnist-mlp"], "choose one of digits-mlp, modadd-1l"),
    (["basis", "modular", "--resolution", "-1"], "--resolution must be a finite number > 0"),
    (["sweep", "any.yaml", "--workers", "0"], "--workers must be an integer >= 1"),
    (["sweep", "any.yaml", "--backend", "dask"], "choose one of auto, ray, serial"),
    (["sweep", "any.yaml", "--retries", "-1"], "--retries must be an integer >= 0"),
    (["directions", "sweep", "--position", "96"], "--position must be a position in [-96, 95]"),
    (["directions", "error", "--position", "-97"], "of the 96-token held-out sequences (n_ctx)"),
]


@pytest.fixture
def no_model(monkeypatch):
    """Any model load fails the test: the checks must come first."""

    def refuse(*args, **kwargs):
        pytest.fail(f"a model was loaded: {args}")

    import mechscope.basis.pretrained as basis

    monkeypatch.setattr(mechscope, "load_model", refuse)
    monkeypatch.setattr(basis, "load_bundled", refuse)


def _one_line_error(output: str) -> str:
    assert "Traceback" not in output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), output
    return lines[0]


@pytest.mark.parametrize(("args", "says"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_option_exits_2_before_any_model_loads(args, says, no_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything written would land here
    t0 = time.perf_counter()
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert says in _one_line_error(r.output)
    assert list(tmp_path.iterdir()) == []
    assert time.perf_counter() - t0 < 5


def test_cuda_without_a_gpu_is_refused_up_front(no_model, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for args in (
        ["evolution", "run", "--device", "cuda"],
        ["zoo", "build", "code-2l", "--device", "cuda:1"],
    ):
        r = runner.invoke(app, args)
        assert r.exit_code == 2
        assert "no CUDA device (torch.cuda.is_available() is False)" in _one_line_error(r.output)
    with pytest.raises(OptionError, match="must be cpu, cuda, cuda:N or mps"):
        V.device("--device", "meta")
    with pytest.raises(OptionError, match="must be a torch device"):
        V.device("--device", "gpu0")


def test_a_port_in_use_is_refused_before_the_work(no_model):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        r = runner.invoke(app, ["evolution", "run", "--serve", "--port", str(busy)])
    assert r.exit_code == 2
    assert f"--port {busy} cannot be used on 127.0.0.1" in _one_line_error(r.output)


def test_patch_refuses_a_sweep_bigger_than_memory_after_loading_only(tmp_path):
    """The prompt length needs the tokenizer, so patch checks memory after loading the model,
    before making the prompts or patching: --n 1000000 (terabytes) stops at once."""
    t0 = time.perf_counter()
    r = runner.invoke(app, ["patch", "--n", "1000000", "--out", str(tmp_path / "p")])
    assert r.exit_code == 2
    line = _one_line_error(r.output)
    assert "patching 1000000 prompt pairs would need about" in line and "GB of memory" in line
    assert "lower --n or --memory-mb" in line
    assert not (tmp_path / "p").exists()
    assert time.perf_counter() - t0 < 30


def test_run_task_on_a_folder_without_tokenizer_is_one_line(no_model, tmp_path):
    """An HF model folder without tokenizer files: HF would build an empty tokenizer and the
    task's prompts fail deep inside; the check names what is missing and how to add it."""
    from mechscope.artefacts import model_dir

    (tmp_path / "config.json").write_text((model_dir("code-2l") / "config.json").read_text())
    r = runner.invoke(app, ["run-task", "--model", str(tmp_path)])
    assert r.exit_code == 2
    line = _one_line_error(r.output)
    assert "the folder has no tokenizer (none of tokenizer.json" in line
    assert f"`tokenizer.save_pretrained` into '{tmp_path}'" in line
    (tmp_path / "tokenizer.json").write_text("{}")
    V.model_tokenizer("--model", str(tmp_path))  # a tokenizer file: passes
    V.model_tokenizer("--model", "code-2l")  # zoo names pass


def test_position_is_checked_against_a_loaded_models_context(gpt2_2l):
    from mechscope.directions.cli import check_position
    from mechscope.models.lean import as_lean

    check_position(95, as_lean(gpt2_2l))
    check_position(None, "nobody/hub-model")  # unknown without loading: checked after loading
    with pytest.raises(typer.Exit):
        check_position(-97, as_lean(gpt2_2l))


def test_check_memory_names_estimate_and_option():
    V.check_memory("x", 2**30, "--n", available=2**31)  # fits: nothing happens
    V.check_memory("x", 2**40, "--n", available=0)  # unknown free memory: no check
    with pytest.raises(OptionError, match=r"x would need about 2\.0 GB .* 1\.0 GB is available; "):
        V.check_memory("x", 2**31, "--n", available=2**30)
    assert V.available_memory() > 0


@pytest.mark.parametrize("name", ["code-attn4", "code-2l", "code-llama-2l"])
def test_model_dims_without_loading_match_the_loaded_model(name):
    """Sizes read from config.json (no load) equal the loaded bridge's cfg."""
    loaded = mechscope.load_model(name)
    from_file, from_model = V.model_dims(name), V.model_dims(loaded)
    assert from_file is not None and from_file == from_model
    assert from_file.n_layers == loaded.cfg.n_layers and from_file.d_vocab == loaded.cfg.d_vocab


def test_estimates_follow_their_formulas():
    d = V.Dims(n_layers=2, d_model=8, d_mlp=32, d_vocab=100, n_ctx=16)
    per = 6 * 8 + 2 * 32
    h = V.Dims(n_layers=2, d_model=8, d_mlp=32, d_vocab=100, n_ctx=16, n_heads=2, d_head=4)
    # per layer and token: 4 d_model-sized hooks, q, k, v, z (2 heads x 4) and the pattern (2 x 5)
    caches = 4 * 2 * 3 * 5 * (2 * (4 * 8 + 4 * 2 * 4 + 2 * 5) + 8)
    row = 4 * (5 * (5 * 2 * 8 + 3 * 2 * 5 + 2 * 32 + 8 * 8) + 100)
    assert V.patch_cache_bytes(h, 3, 5, "resid_pre", "denoising") == caches
    assert V.patch_row_bytes(h, 5, 5, 1) == row
    assert V.patch_bytes(h, 3, 5, "resid_pre", memory_mb=0) == caches + 2 * 5 * 5 + 3 * row
    assert V.regions_bytes(d, 4, 10, 5, 25) == 4 * (2 * 4 * 10 * 8 + 20 * (5 * 2 * per + 300))
    assert V.sae_bytes(d, 2, 4) == 4 * (2 * 8 * 32 * 4 + 3 * 32 * 32 + 32 * (2 * per + 200))


def test_numbers_and_ranges():
    assert V.numbers("--c", "1, 3,10", lo=0) == [1.0, 3.0, 10.0]
    assert V.numbers("--k", "", lo=1, integers=True) == []
    with pytest.raises(OptionError, match=r"--k takes comma-separated integers, got '1.5'"):
        V.numbers("--k", "1.5", lo=1, integers=True)
    V.number("--x", 0.5, lo=0, hi=1)
    for bad in (float("nan"), float("-inf"), 1.5, -0.1):
        with pytest.raises(OptionError, match=r"--x must be a finite number in \[0, 1\]"):
            V.number("--x", bad, lo=0, hi=1)
    with pytest.raises(OptionError, match=r"in \(0, 1\]"):
        V.number("--x", 0.0, lo=0, hi=1, lo_open=True)
    V.dtype("--dtype", "torch.bfloat16")
    with pytest.raises(OptionError, match="float8_e4m3fn"):
        V.dtype("--dtype", "float8_e4m3fn")


def test_unknown_hub_name_fails_at_once_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(ModelLoadError, match=r"HF_HUB_OFFLINE.* is set, so the hub is not asked"):
        mechscope.load_model("nobody/no-such-model")
    assert time.perf_counter() - t0 < 2


def test_unknown_hub_name_fails_at_once_when_the_hub_is_unreachable(monkeypatch):
    from huggingface_hub import constants

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "0")
    with socket.socket() as s:  # a port nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed}")
    t0 = time.perf_counter()
    with pytest.raises(ModelLoadError, match=r"the hub \(http://127.0.0.1:\d+\) cannot be reached"):
        mechscope.load_model("nobody/no-such-model")
    assert time.perf_counter() - t0 < 5
