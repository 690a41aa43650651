"""tracr ground truth: the bundled models compute their programs, the truths under each ablation,
ACDC's corrupted data, ACDC recovers each truth, any RASP program compiles (slow: jax)."""

from __future__ import annotations

import itertools
import json
import re

import pytest
import torch

from mechscope.circuits.evaluate import node_mask
from mechscope.circuits.patched import CircuitRunner
from mechscope.circuits.tracr import (
    TRACR_DIR,
    TRUTHS,
    build_tracr,
    derive_truth,
    encode,
    load_tracr,
    shuffle_positions,
)
from mechscope.circuits.tracr_eval import acdc_prompts, acdc_sweep, evaluate_tracr

# The ACDC repository's truth for tracr-reverse (acdc/tracr_task/utils.py), in mechscope names.
ACDC_REVERSE = {
    "3.0->logits", "mlp2->3.0.q", "pos_embed->3.0.k", "embed->3.0.v", "mlp1->mlp2",
    "mlp0->mlp1", "embed->mlp1", "pos_embed->mlp1", "0.0->mlp0", "embed->mlp0", "embed->0.0.v",
    "3.0.q->3.0", "3.0.k->3.0", "3.0.v->3.0", "0.0.v->0.0",
}  # fmt: skip
ACDC_PROPORTION = {
    "1.0->logits", "embed->1.0.q", "pos_embed->1.0.q", "embed->1.0.k", "pos_embed->1.0.k",
    "mlp0->1.0.v", "embed->mlp0", "1.0.q->1.0", "1.0.k->1.0", "1.0.v->1.0",
}  # fmt: skip
# auto-circuit's resample-ablation truths (metrics/official_circuits/circuits/tracr/), with its
# single input node "Resid Start" as the token embedding, plus ACDC's q/k/v computation edges
AUTO_CIRCUIT_REVERSE = {"embed->3.0.v", "3.0->logits", "3.0.v->3.0"}
AUTO_CIRCUIT_PROPORTION = {"embed->mlp0", "mlp0->1.0.v", "1.0->logits", "1.0.v->1.0"}


def names(task, mask):
    return set(task.edge_names(mask))


def test_bundled_models_compute_their_programs():
    rev = load_tracr("reverse")
    enc = {int(k): v for k, v in rev.info["input_encoding"].items() if k.isdigit()}
    out = rev.model(rev.tokens)[:, 1:].argmax(-1)  # output index i = value i + 1
    inputs = [[k for t in row for k, v in enc.items() if v == t] for row in rev.tokens[:, 1:]]
    assert out.tolist() == [[x - 1 for x in reversed(row)] for row in inputs]
    prop = load_tracr("proportion")
    words = encode(list(itertools.product("wxyz", repeat=4)), prop.info["input_encoding"])
    is_x = (words[:, 1:] == prop.info["input_encoding"]["x"]).float()
    frac = is_x.cumsum(1) / torch.arange(1, is_x.shape[1] + 1)
    assert torch.allclose(prop.model(words)[:, 1:, 0], frac, atol=1e-3)
    # ACDC's proportion data: w x y z as ids 0..3, which tracr encodes as BOS, pad, w, x
    assert prop.tokens.shape == (256, 4) and set(prop.tokens.unique().tolist()) == {0, 1, 2, 3}
    bos = rev.info["input_encoding"]["BOS"]
    assert rev.tokens.shape == (6, 4) and (rev.tokens[:, 0] == bos).all()


def test_zero_truths_are_the_acdc_repositorys():
    rev, prop = load_tracr("reverse"), load_tracr("proportion")
    assert names(rev, rev.truths["zero"]) == ACDC_REVERSE  # derived here, equal to ACDC's
    assert names(prop, prop.truths["zero"]) == ACDC_PROPORTION  # on ACDC's inputs
    for t in (rev, prop):
        for truth in t.truths.values():
            assert bool((truth <= t.structural).all())
    assert rev.structural.sum() > rev.truth.sum() and torch.equal(rev.truth, rev.truths["zero"])


def test_bos_first_inputs_drop_the_bos_reads_from_the_zero_truth():
    """With BOS first, as tracr encodes inputs, removing the 'attend to BOS when nothing
    matches' reads embed -> 1.0.q / 1.0.k changes no output at all (ACDC's data puts BOS ids
    anywhere, where they matter)."""
    prop = load_tracr("proportion")
    words = encode(list(itertools.product("wxyz", repeat=4)), prop.info["input_encoding"])
    zero = derive_truth(prop.model, prop.graph, words, prop.structural, "zero")
    extra = ACDC_PROPORTION - names(prop, zero)
    assert extra == {"embed->1.0.q", "embed->1.0.k"}
    r = CircuitRunner(prop.model, prop.graph, words, None, "zero", logit_pos=(1, 2, 3, 4))
    masks = torch.ones(3, len(prop.graph.edges), dtype=torch.bool)
    masks[1:, prop.graph.edge_ids(sorted(extra))] = False
    masks[2, prop.graph.edge_index["pos_embed->1.0.q"]] = False
    out = r.logits(masks)
    assert torch.equal(out[1], out[0]) and not torch.allclose(out[2], out[0], atol=1e-2)
    # resample: auto-circuit's truth (its data: BOS first), on 48 of the 256 inputs
    some = words[torch.randperm(256, generator=torch.Generator().manual_seed(0))[:48]]
    resample = derive_truth(prop.model, prop.graph, some, prop.structural, "resample")
    assert names(prop, resample) == AUTO_CIRCUIT_PROPORTION


def test_resample_truths():
    rev, prop = load_tracr("reverse"), load_tracr("proportion")
    # every input has length 3 and the same positions: only the copied token matters
    assert names(rev, rev.truths["resample"]) == AUTO_CIRCUIT_REVERSE
    # shuffled positions: the index path into the query (indices -> opp_index) and the key's
    # index read matter too; length (the same on every input) still does not
    assert names(rev, rev.truths["resample_shuffled"]) == AUTO_CIRCUIT_REVERSE | {
        "pos_embed->mlp1", "mlp1->mlp2", "mlp2->3.0.q", "pos_embed->3.0.k", "3.0.q->3.0",
        "3.0.k->3.0",
    }  # fmt: skip
    # ACDC's proportion data puts BOS ids anywhere: the key's tokens:BOS read matters, the
    # query's `one` (the same everywhere) does not
    assert names(prop, prop.truths["resample"]) == AUTO_CIRCUIT_PROPORTION | {
        "embed->1.0.k",
        "1.0.k->1.0",
    }
    assert names(prop, prop.truths["resample_shuffled"]) == ACDC_PROPORTION - {"embed->1.0.q"}


def test_stored_truths_are_rederived():
    rev, prop = load_tracr("reverse"), load_tracr("proportion")
    for truth in TRUTHS:
        got = derive_truth(rev.model, rev.graph, rev.tokens, rev.structural, truth)
        assert torch.equal(got, rev.truths[truth]), truth
    zero = derive_truth(prop.model, prop.graph, prop.tokens, prop.structural, "zero")
    assert torch.equal(zero, prop.truths["zero"])  # resample (65,536 pairs): the slow rebuild


def test_node_counts_of_acdcs_tracr_circuits():
    """ACDC's stored sweeps score 5 of 16 nodes (reverse) and 8 of 11 (proportion)."""
    rev, prop = load_tracr("reverse"), load_tracr("proportion")
    assert int(node_mask(rev.graph, rev.truths["zero"]).sum()) == 16
    assert int(node_mask(prop.graph, prop.truths["zero"]).sum()) == 11
    assert int(node_mask(rev.graph, rev.truths["resample"]).sum()) == 5
    assert int(node_mask(prop.graph, prop.truths["resample"]).sum()) == 8


def test_shuffle_positions_is_acdcs_scramble():
    z = torch.randn(4, 5).expand(3, 4, 5)  # hook_pos_embed: the same for every prompt
    with torch.random.fork_rng():  # ACDC: z[:] = shuffle_tensor(z[0], seed=49)
        torch.random.manual_seed(49)
        want = z[0][torch.randperm(4)].expand_as(z)
    assert torch.equal(shuffle_positions(4)["hook_pos_embed"](z), want)


def test_acdc_prompts_are_drawn_as_acdc_draws_them():
    rev, prop = load_tracr("reverse"), load_tracr("proportion")
    clean, corrupt = acdc_prompts(rev, seed=3)
    assert torch.equal(clean, rev.tokens)  # all 6, paired without fixed points
    assert not (clean == corrupt).all(1).any()
    clean, corrupt = acdc_prompts(prop, seed=3)
    assert clean.shape == (50, 4) and len({tuple(r) for r in clean.tolist()}) == 50
    assert sorted(corrupt.tolist()) == sorted(clean.tolist())  # the same rows permuted


@pytest.mark.parametrize(
    ("name", "paper"), [("reverse", (0.2, 0.3125)), ("proportion", (0.6, 8 / 11))]
)
def test_acdc_recovers_each_truth_and_the_papers_numbers(name, paper):
    t = load_tracr(name)
    rows = evaluate_tracr(t, seeds=[0], taus=(1e-3, 1.0))
    for r in rows:
        assert r.kept[1] == 0  # a huge tau removes everything: the sweep is not trivial
        areas = (r.edge_pessimistic, r.edge_trapezoid, r.node_pessimistic, r.node_trapezoid)
        assert areas == (1.0, 1.0, 1.0, 1.0), r
    for truth in TRUTHS:
        assert torch.equal(acdc_sweep(t, truth, 0, (1e-3,))[0], t.truths[truth])
    # ACDC's paper scores resample-ablation circuits against the zero-ablation truth
    resample = next(r for r in rows if r.truth == "resample")
    got = (resample.zero_truth_edge_pessimistic, resample.zero_truth_node_pessimistic)
    assert got == pytest.approx(paper)


def _without_ids(text: str) -> str:
    return re.sub(r"_\d+(?=[:\"])", "", text)  # RASP labels carry process-wide ids


@pytest.mark.slow
def test_rebuilding_with_tracr_reproduces_the_bundle(tmp_path):
    from safetensors.torch import load_file

    build_tracr(tmp_path)
    for name in ("reverse", "proportion"):
        new = load_file(str(tmp_path / name / "model.safetensors"))
        old = load_file(str(TRACR_DIR / name / "model.safetensors"))
        assert new.keys() == old.keys() and all(torch.equal(new[k], old[k]) for k in new)
        new_info = json.loads((tmp_path / name / "truth.json").read_text())
        old_info = json.loads((TRACR_DIR / name / "truth.json").read_text())
        assert new_info["true_edges"] == old_info["true_edges"]
        assert _without_ids(json.dumps(new_info)) == _without_ids(json.dumps(old_info))


@pytest.mark.slow
def test_any_rasp_program_compiles_with_its_truths(tmp_path):
    """A program other than the presets, copying each token by position: a head whose query
    and key read the positions (indices) and whose value reads the tokens. By hand:
    zero ablation needs the query's and key's position reads (without them nothing matches and
    the head falls back to BOS), the value's token read and the output; its query/key reads of
    `one` / tokens:BOS (the fallback) never matter. Resample ablation keeps positions, so only
    the token read into the value and the output matter. Shuffled positions make the position
    reads matter again."""
    from tracr.rasp import rasp

    from mechscope.circuits.tracr import compile_tracr, save_tracr, task_from

    copy = rasp.categorical(
        rasp.Aggregate(rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.EQ), rasp.tokens)
    )
    compiled = compile_tracr(copy, {"a", "b", "c"}, max_seq_len=3, name="copy")
    tokens = compiled.encode(list(itertools.product("abc", repeat=3)))
    task = task_from(compiled, tokens)
    out = task.model(tokens)[:, 1:].argmax(-1)  # output i = the i-th value, a b c
    assert torch.equal(out, tokens[:, 1:] - compiled.info["input_encoding"]["a"])
    head = {"0.0->logits", "0.0.v->0.0", "embed->0.0.v"}
    qk = {"pos_embed->0.0.q", "pos_embed->0.0.k", "0.0.q->0.0", "0.0.k->0.0"}
    assert names(task, task.truths["zero"]) == head | qk
    assert names(task, task.truths["resample"]) == head
    assert names(task, task.truths["resample_shuffled"]) == head | qk
    assert {"embed->0.0.q", "embed->0.0.k"} <= names(task, task.structural)
    rows = evaluate_tracr(task, seeds=[0], taus=(1e-3, 1.0))
    assert all(r.edge_pessimistic == 1.0 == r.node_pessimistic for r in rows)
    again = load_tracr(save_tracr(task, compiled, tmp_path / "copy"))
    assert all(torch.equal(again.truths[t], task.truths[t]) for t in TRUTHS)
    assert torch.equal(again.tokens, tokens) and again.search == task.search
