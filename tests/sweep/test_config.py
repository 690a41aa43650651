"""Sweep configs: YAML and TOML, the grid's expansion, trial keys, and errors that name the file
and the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from mechscope.sweep import KINDS, SweepConfig, SweepError, load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "sweeps"


def test_grid_expands_in_order_with_fixed_params(toy, write_config):
    path = write_config(
        {"kind": "toy", "fixed": {"seed": 3}, "grid": {"x": [1, 2.5], "label": ["a", "b", "c"]}}
    )
    cfg = load_config(path)
    trials = cfg.trials()
    assert [(t.params["x"], t.params["label"]) for t in trials] == [
        (1.0, "a"),
        (1.0, "b"),
        (1.0, "c"),
        (2.5, "a"),
        (2.5, "b"),
        (2.5, "c"),
    ]
    assert all(t.params["seed"] == 3 for t in trials)
    assert trials[0].key.startswith("x-1.0__label-a__") and len({t.key for t in trials}) == 6
    assert [t.key for t in cfg.trials()] == [t.key for t in trials]  # deterministic


def test_keys_depend_on_every_param_not_on_spelling(toy):
    def key(d):
        return SweepConfig.from_dict({"kind": "toy", **d}).trials()[0].key

    base = key({"fixed": {"seed": 0}, "grid": {"x": [1]}})
    assert key({"fixed": {"seed": 0}, "grid": {"x": [1.0]}}) == base  # 1 and 1.0: one float
    assert key({"fixed": {"seed": 0}, "grid": {"x": ["1e0"]}}) == base  # YAML's string 1e0
    assert key({"fixed": {"seed": 1}, "grid": {"x": [1]}}) != base  # fixed params count too
    assert key({"grid": {"x": [1]}}).split("__")[0] == "x-1.0"


def test_yaml_and_toml_read_the_same(toy, tmp_path):
    (tmp_path / "a.toml").write_text(
        'kind = "toy"\nthreads = 2\n[fixed]\nlabel = "z"\n[grid]\nx = [0.5, 1]\n'
    )
    (tmp_path / "a.yaml").write_text(
        "kind: toy\nthreads: 2\nfixed: {label: z}\ngrid: {x: [0.5, 1]}"
    )
    a, b = load_config(tmp_path / "a.toml"), load_config(tmp_path / "a.yaml")
    assert [t.key for t in a.trials()] == [t.key for t in b.trials()] and a.threads == 2
    assert SweepConfig.from_dict(a.to_dict()).trials() == a.trials()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"kind": "nope", "grid": {}}, "kind: 'nope' is not a sweep kind; choose from acdc"),
        ({"kind": "toy", "grdi": {}}, "unknown key 'grdi' (did you mean 'grid'?)"),
        ({"kind": "toy", "grid": {"xx": [1]}}, "toy has no parameter 'xx' (did you mean 'x'?)"),
        ({"kind": "toy", "grid": {"x": []}}, "grid.x: expected a non-empty list, got []"),
        ({"kind": "toy", "grid": {"x": 1}}, "grid.x: expected a non-empty list, got 1"),
        ({"kind": "toy", "grid": {"x": [1, "a"]}}, "grid.x[1]: expected a number, got 'a'"),
        ({"kind": "toy", "grid": {"x": [1, 1.0]}}, "grid.x: a value is listed twice"),
        ({"kind": "toy", "fixed": {"seed": 1.5}}, "fixed.seed: expected a whole number, got 1.5"),
        ({"kind": "toy", "fixed": {"fail": "no"}}, "fixed.fail: expected true or false"),
        ({"kind": "toy", "fixed": {"x": 1}, "grid": {"x": [2]}}, "'x' is both in `fixed`"),
        ({"kind": "toy", "threads": 0}, "threads: expected a whole number >= 1, got 0"),
        ({"kind": "toy", "fixed": [1]}, "fixed: expected a mapping of parameter names"),
        ({"kind": "sae", "grid": {"layer": [0]}}, "sae needs 'model' in `fixed` or in `grid`"),
        ({"kind": "acdc", "grid": {"task": ["docstrng"]}}, "task 'docstrng' is unknown"),
        ({"kind": "regions", "grid": {"revision": ["step-7"]}}, "code-4l has no revision 'step-7'"),
    ],
)
def test_errors_name_the_file_and_the_bad_key(toy, write_config, config, message):
    path = write_config(config, "bad.yaml")
    with pytest.raises(SweepError) as e:
        load_config(path)
    assert str(path) in str(e.value) and message in str(e.value)


def test_file_errors(tmp_path):
    with pytest.raises(SweepError, match="cannot read sweep config"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "a.json").write_text("{}")
    with pytest.raises(SweepError, match=r"a sweep config is a \.yaml, \.yml or \.toml file"):
        load_config(tmp_path / "a.json")
    (tmp_path / "b.yaml").write_text("kind: [")
    with pytest.raises(SweepError, match="not valid YAML"):
        load_config(tmp_path / "b.yaml")
    (tmp_path / "c.toml").write_text("kind = ")
    with pytest.raises(SweepError, match="not valid TOML"):
        load_config(tmp_path / "c.toml")


@pytest.mark.parametrize(
    ("name", "n_trials"), [("acdc.yaml", 16), ("sae.toml", 8), ("regions.yaml", 14)]
)
def test_example_configs_parse_and_expand(name, n_trials):
    cfg = load_config(EXAMPLES / name)
    trials = cfg.trials()
    assert len(trials) == n_trials and len({t.key for t in trials}) == n_trials
    assert cfg.out is not None and cfg.kind in KINDS
    for t in trials:  # each trial's parameters build the kind's parameter object
        KINDS[cfg.kind].params(**t.params)
