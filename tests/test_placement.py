"""Every command that loads a model takes --device, --device-map and --dtype, and the placement
reaches the model: the loader gets it and the model it returns has it (issue #20: placement was
a module global that only some commands read). The sweep and the demo carry it to every trial and
stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import typer
from typer.testing import CliRunner

from mechscope.cli import app
from mechscope.models import Placement, loading

runner = CliRunner()

PLACEMENT_OPTIONS = ("--device", "--device-map", "--dtype")
HOOK0, HOOK1 = "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"
#: commands with a --model option that read a card and load no model
NOT_LOADING = {"sae list"}
#: commands that load models without a --model option (the models come from a config or stage)
LOADING_WITHOUT_MODEL = {"sweep", "demo"}


def _commands(group: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf command of the app (typer's click commands) by its full name ("sae train")."""
    out: dict[str, Any] = {}
    for name, cmd in group.commands.items():
        full = f"{prefix}{name}"
        out |= _commands(cmd, full + " ") if hasattr(cmd, "commands") else {full: cmd}
    return out


def _options(cmd: Any) -> set[str]:
    return {o for p in cmd.params if p.param_type_name == "option" for o in p.opts}


COMMANDS = _commands(typer.main.get_command(app))
LOADING = sorted(
    n for n, c in COMMANDS.items() if "--model" in _options(c) and n not in NOT_LOADING
) + sorted(LOADING_WITHOUT_MODEL)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_model_loading_commands_take_the_placement_options(name, loads):
    """A command with --model (or the sweep / the demo) takes all three options; one without
    loads no model. A new command with --model fails here until it has the options and a case
    in CASES below."""
    has = set(PLACEMENT_OPTIONS) & _options(COMMANDS[name])
    if name in LOADING:
        assert has == set(PLACEMENT_OPTIONS), (
            f"`mechscope {name}` lacks {set(PLACEMENT_OPTIONS) - has}"
        )
        assert name in CASES, f"add `mechscope {name}` to CASES in {__file__}"
    else:
        assert not has or name == "zoo build", name  # zoo build's --device: where it trains
    if name in NOT_LOADING:
        r = runner.invoke(app, [*name.split(), "--model", "code-2l"])
        assert r.exit_code == 0 and not loads, r.output


@pytest.fixture
def loads(monkeypatch) -> list[dict[str, Any]]:
    """Every `load_model` call: its arguments and the loaded model's parameter dtype/device."""
    calls: list[dict[str, Any]] = []
    real = loading.load_model

    def record(name, revision=None, device=None, dtype=None, **split):
        model = real(name, revision, device, dtype, **split)
        p = next(model.parameters())
        calls.append(
            {
                "name": str(name),
                "device": device,
                "device_map": split.get("device_map"),
                "dtype": dtype,
                "param_dtype": p.dtype,
                "param_device": p.device.type,
            }
        )
        return model

    monkeypatch.setattr(loading, "load_model", record)
    return calls


@pytest.fixture(scope="module")
def saes(tmp_path_factory, toy_dir) -> dict[str, tuple[Path, Path]]:
    """Untrained SAEs at blocks.0 and blocks.1 resid_post of each model (SAELens folders)."""
    import mechscope
    from mechscope.models.lean import as_lean
    from mechscope.sae import SAEConfig, SparseAutoencoder, save_saelens

    out: dict[str, tuple[Path, Path]] = {}
    for key, model in (("toy", str(toy_dir("gpt2"))), ("native", "code-attn4")):
        d = int(as_lean(mechscope.load_model(model)).cfg.d_model)
        root = tmp_path_factory.mktemp(f"saes-{key}")
        out[key] = tuple(  # type: ignore[assignment]
            save_saelens(
                SparseAutoencoder(SAEConfig(d, 2 * d, hook_name=h), seed=0), root / h.split(".")[1]
            )
            for h in (HOOK0, HOOK1)
        )
    return out


TINY_SAE = ["--steps", "2", "--batch-size", "2", "--expansion", "1", "--eval-batches", "1"]
TINY_DIR = ["--batches", "1", "--batch-size", "2"]


def _sweep_config(tmp: Path, model: str) -> list[str]:
    cfg = tmp / "acdc.yaml"
    fixed = {"model": model, "task": "ioi", "n": 2, "tau": 0.1, "batch_size": 2}
    cfg.write_text(json.dumps({"kind": "acdc", "out": str(tmp / "sweep"), "fixed": fixed}))
    return [str(cfg), "--backend", "serial", "--no-progress"]


#: command -> args(model, tmp folder, (sae at blocks.0, sae at blocks.1)); a zoo-only command
#: names its own model (code-2l)
CASES: dict[str, Any] = {
    "run-task": lambda m, t, s: ["--model", m, "--task", "ioi", "--n", "2"],
    "patch": lambda m, t, s: ["--model", m, "--task", "ioi", "--n", "2", "-c", "z", "--out", t],
    "acdc": lambda m, t, s: [
        *("--model", m, "--task", "ioi", "--n", "2", "--n-test", "2", "--tau", "0.1"),
        *("--out", t / "c"),
    ],
    "sae train": lambda m, t, s: ["--model", m, "--hook", HOOK0, *TINY_SAE, "--out", t],
    "sae sweep": lambda m, t, s: [
        *("--model", m, "--hooks", HOOK0, "--coeffs", "1", *TINY_SAE, "--out", t),
    ],
    "sae store": lambda m, t, s: [
        *("--model", m, "--hooks", HOOK0, "--n-tokens", "8", "--batch-size", "1"),
        *("--out", t / "store"),
    ],
    "sae eval": lambda m, t, s: [str(s[0]), "--model", m, "--eval-batches", "1"],
    "sae build-bundled": lambda m, t, s: [
        *("--model", "code-2l", "--steps", "1", "--no-e2e", "--out", t),
    ],
    "sae build-transcoders": lambda m, t, s: [
        *("--model", "code-2l", "--steps", "1", "--out", t),
    ],
    "regions run": lambda m, t, s: [
        *("--model", m, "--n-prompts", "2", "--n-steps", "3", "--out", t),
    ],
    "regions semantic": lambda m, t, s: [
        *("--model", m, "--n-prompts", "3", "--n-steps", "3", "--out", t),
    ],
    "regions sweep": lambda m, t, s: [
        *("-m", m, "-r", "main", "--n-prompts", "2", "--n-steps", "3", "--out", t),
    ],
    "directions sweep": lambda m, t, s: [
        *("--model", m, "--hook", HOOK1, "-f", "isotropic", *TINY_DIR, "--lengths", "1"),
        *("--out", t),
    ],
    "directions error": lambda m, t, s: ["--model", m, "--sae", str(s[0]), *TINY_DIR, "--out", t],
    "directions features": lambda m, t, s: [
        *("--model", m, "--hook", HOOK0, "--sae", str(s[0]), *TINY_DIR, "--lengths", "1"),
        *("--out", t),
    ],
    "directions paper": lambda m, t, s: [
        *("--model", "code-2l", *TINY_DIR, "--lengths", "1", "--out", t),
    ],
    "evolution run": lambda m, t, s: [
        *("--model", m, "--sae", str(s[0]), "--sae", str(s[1]), "--batches", "1"),
        *("--batch-size", "2", "--min-support", "0", "--no-graph", "--out", t),
    ],
    "graph": lambda m, t, s: [
        *("--model", "code-2l", "--transcoders", _random_transcoders(t / "tc"), "--prompt"),
        *("def f(", "--out", t / "g.json"),
    ],
    "steer": lambda m, t, s: [
        *("--model", m, "--prompt", "def f(", "--sae", str(s[0]), "--zero", "0"),
        *("--max-new-tokens", "2"),
    ],
    "sweep": lambda m, t, s: _sweep_config(t, m),
    "demo": lambda m, t, s: ["--quick", "--only", "patching", "--out", t / "r.html"],
}
ZOO_ONLY = {"sae build-bundled", "sae build-transcoders", "directions paper", "graph"}
#: placement -> its command-line options
PLACEMENTS = {
    "hf-bf16-map": ("--device-map", "cpu", "--dtype", "bfloat16"),
    "native-cpu": ("--device", "cpu"),
}


def _random_transcoders(folder: Path) -> Path:
    """A circuit-tracer set of random transcoders for code-2l (d_model 128, 2 layers): enough
    for `mechscope graph` to run, without loading the model here."""
    from mechscope.sae.config import SAEConfig
    from mechscope.sae.transcoder import Transcoder, save_circuit_tracer

    cfgs = [
        SAEConfig(
            d_in=128,
            d_sae=32,
            hook_name=f"blocks.{l}.ln2.hook_normalized",
            apply_b_dec_to_input=False,
            model_name="code-2l",
        )
        for l in range(2)
    ]
    return save_circuit_tracer([Transcoder(c, seed=l) for l, c in enumerate(cfgs)], folder)


def _model(placement: str, command: str, toy_dir) -> str:
    if command in ZOO_ONLY:
        return "code-2l"
    return str(toy_dir("gpt2")) if placement == "hf-bf16-map" else "code-attn4"


def _small_demo(monkeypatch) -> None:
    """The demo's patching stage on code-attn4 alone, 2 prompts, one component."""
    from mechscope.report import sections as S

    real = S.DemoConfig.make

    def make(quick, placement=None):
        cfg = real(quick, placement)
        return S.DemoConfig(
            **{
                **{f: getattr(cfg, f) for f in S.DemoConfig.__dataclass_fields__},
                "patch_models": ("code-attn4",),
                "patch_n": 2,
                "patch_components": ("resid_pre",),
            }
        )

    monkeypatch.setattr(S.DemoConfig, "make", staticmethod(make))


@pytest.mark.slow
@pytest.mark.parametrize("placement", sorted(PLACEMENTS))
@pytest.mark.parametrize("command", sorted(CASES))
def test_placement_reaches_the_model(
    command, placement, loads, saes, toy_dir, tmp_path, monkeypatch
):
    options = PLACEMENTS[placement]
    if (
        command == "demo"
    ):  # the demo's models are the zoo's: a device map would not place code-attn4
        options = ("--device", "cpu", "--dtype", "bfloat16")
        _small_demo(monkeypatch)
    if command == "sae build-bundled":
        from mechscope.sae import bundled

        monkeypatch.setattr(bundled, "N_EVAL_BATCHES", 1)
        real_configs = bundled.bundled_configs
        monkeypatch.setattr(bundled, "bundled_configs", lambda *a: real_configs(*a)[:1])
    model = _model(placement, command, toy_dir)
    key = "toy" if placement == "hf-bf16-map" else "native"
    args = [*command.split(), *map(str, CASES[command](model, tmp_path, saes[key])), *options]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, f"{args}: {r.output}\n{r.exception!r}"
    assert loads, f"`mechscope {command}` loaded no model through load_model"
    want = dict(zip(options[::2], options[1::2], strict=True))
    for call in loads:
        assert call["device"] == want.get("--device"), call
        assert call["device_map"] == want.get("--device-map"), call
        assert call["dtype"] == want.get("--dtype"), call
        assert call["param_device"] == "cpu", call
        dtype = getattr(torch, want.get("--dtype", "float32"))
        assert call["param_dtype"] == dtype, call  # the placement reached the model itself


def test_sweep_and_demo_carry_the_placement_to_every_trial_and_stage(loads, monkeypatch, tmp_path):
    """Every sweep kind and every demo stage that loads a transformer loads it with the given
    placement (each stops at its first load: what comes after is the commands' test above)."""
    from mechscope.report import demo as D
    from mechscope.report.sections import DemoConfig
    from mechscope.sweep import KINDS
    from mechscope.sweep.kinds import cached_model
    from mechscope.sweep.runner import run_trial

    class Loaded(Exception):
        pass

    recorder = loading.load_model  # the `loads` fixture's

    def load_then_stop(*a, **kw):
        recorder(*a, **kw)
        raise Loaded

    monkeypatch.setattr(loading, "load_model", load_then_stop)
    placement = Placement(device="cpu", dtype="bfloat16")
    cached_model.cache_clear()
    params = {"acdc": {}, "sae": {"model": "code-2l", "hook_name": HOOK0}, "regions": {}}
    for kind in KINDS:
        n = len(loads)
        r = run_trial(kind, "k", params[kind], str(tmp_path), 1, placement)
        assert r.status == "failed" and "Loaded" in (r.error or ""), (kind, r.error)
        assert len(loads) == n + 1, kind
    cached_model.cache_clear()
    cfg = DemoConfig.make(quick=True, placement=placement)
    loading_stages = []
    for key in D.STAGE_NAMES:
        n = len(loads)
        D.run_stage(key, cfg, tmp_path)
        if len(loads) > n:
            loading_stages.append(key)
    assert loading_stages == ["patching", "circuits", "directions", "evolution", "regions"]
    assert all(c["device"] == "cpu" and c["param_dtype"] == torch.bfloat16 for c in loads), loads


def test_device_map_json_fails_where_the_placement_is_made():
    from mechscope.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="not valid JSON"):
        Placement(device_map="{bad")
    assert Placement(device_map='{"lm_head": "cpu"}').kwargs()["device_map"] == {"lm_head": "cpu"}
    assert hash(Placement("cpu", None, "bfloat16")) == hash(Placement("cpu", None, "bfloat16"))


def test_loading_a_local_folder_sets_no_environment_variable(toy_dir, monkeypatch):
    """The local-only intent is the folder's absolute path, not a process-wide HF_HUB_OFFLINE."""
    import os

    import mechscope

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    before = dict(os.environ)
    model = mechscope.load_model(toy_dir("gpt2"))
    assert dict(os.environ) == before
    assert Path(model.cfg.model_name).is_absolute()


def test_saes_load_on_the_given_device(saes):
    from mechscope.sae import load_saelens
    from mechscope.sae.bundled import load_bundled

    sae = load_saelens(saes["toy"][0], device=torch.device("meta"))
    assert sae.W_dec.device.type == "meta"
    bundled = load_bundled("code-2l", "blocks.0.hook_resid_post__local__l1-2", "meta")
    assert bundled.W_enc.device.type == "meta"
