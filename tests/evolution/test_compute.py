"""End to end on code-2l with its bundled SAEs: one forward per batch, result files, CLI."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from mechscope.data.batches import eval_batches
from mechscope.errors import EvolutionError
from mechscope.evolution import EvolutionConfig, EvolutionResult, compute_evolution
from mechscope.evolution.cli import evolution_app
from mechscope.evolution.collect import layer_codes, stream_codes
from mechscope.models.lean import as_lean
from mechscope.sae.activations import collect
from mechscope.sae.bundled import load_bundled

NAMES = [f"blocks.{l}.hook_resid_post__local__l1-1" for l in (0, 1)]


@pytest.fixture(scope="module")
def saes():
    return [load_bundled("code-2l", n) for n in NAMES]


@pytest.fixture(scope="module")
def result(gpt2_2l, saes):
    batches = eval_batches(gpt2_2l, 3, batch_size=4)
    cfg = EvolutionConfig(algorithms=("louvain", "leiden"))
    return compute_evolution(gpt2_2l, saes, batches, cfg, names=NAMES, model_name="code-2l")


@pytest.mark.slow
def test_one_forward_gives_each_saes_codes(gpt2_2l, saes) -> None:
    lean = as_lean(gpt2_2l)
    tokens = eval_batches(gpt2_2l, 1, batch_size=2)[0]
    hooks = [s.cfg.hook_name for s in saes]
    codes = layer_codes(lean, hooks, saes, tokens)
    for h, s, c in zip(hooks, saes, codes, strict=True):
        torch.testing.assert_close(c, s.encode(collect(lean, tokens, h)))
    _, ids, flat = next(iter(stream_codes(lean, hooks, saes, [tokens])))
    assert flat[0].shape == (ids.numel(), 1024) and ids.numel() < tokens.numel()  # BOS left out


@pytest.mark.slow
def test_result_counts_and_files(result, tmp_path) -> None:
    assert result.sizes == [1024, 1024] and result.n_tokens > 0
    rows = result.counts()
    assert rows[0]["pass_through"] + rows[0]["disappearing"] == 1024
    assert rows[1]["kept"] + rows[1]["appearing"] == 1024
    assert set(result.communities) == {"louvain", "leiden"}
    assert result.layers[0].examples[int(result.layers[0].freq.argmax())]
    again = EvolutionResult.load(result.save(tmp_path / "r"))
    assert again.counts() == rows and again.communities == result.communities
    for m in result.measures:
        s, t = result.pairs[0].sims[m], again.pairs[0].sims[m]
        assert torch.equal(s.rows, t.rows) and torch.equal(s.values, t.values)
    assert again.graph().number_of_edges() == result.graph().number_of_edges()


class Interrupted(Exception):
    """A run cut off mid-way."""


class CutBatches(list):
    """Token batches whose reads by index fail after `reads` of them (iteration still works)."""

    def __init__(self, batches: list, reads: int) -> None:
        super().__init__(batches)
        self.left = reads

    def __getitem__(self, i):  # type: ignore[override]
        if self.left == 0:
            raise Interrupted
        self.left -= 1
        return super().__getitem__(i)


@pytest.mark.slow
def test_checkpoint_resumes_and_refinalises(gpt2_2l, saes, result, tmp_path) -> None:
    batches = eval_batches(gpt2_2l, 3, batch_size=4)
    cfg = EvolutionConfig(algorithms=("louvain", "leiden"))
    run = dict(names=NAMES, model_name="code-2l", checkpoint=tmp_path / "ck", checkpoint_every=1)
    with pytest.raises(Interrupted):  # 3 reads in pass 1, 2 in pass 2, then cut off
        compute_evolution(gpt2_2l, saes, CutBatches(batches, 5), cfg, **run)
    again = compute_evolution(gpt2_2l, saes, batches, cfg, **run)
    assert again.meta["resumed_from"] == {"stage": "pairs", "batch": 2}
    assert "resumed_from" not in result.meta
    # the same sums as the run in one go: every result bit for bit
    assert again.n_tokens == result.n_tokens and again.counts() == result.counts()
    for a, b in zip(result.layers, again.layers, strict=True):
        assert torch.equal(a.active, b.active) and torch.equal(a.freq, b.freq)
        assert torch.equal(a.max_act, b.max_act) and a.examples == b.examples
    for m in result.measures:
        s, t = result.pairs[0].sims[m], again.pairs[0].sims[m]
        assert torch.equal(s.rows, t.rows) and torch.equal(s.values, t.values)
    assert again.communities == result.communities
    # a finished state re-finalises with another floor without streaming
    floor0 = EvolutionConfig(algorithms=("louvain",), min_support=0)
    t0 = compute_evolution(gpt2_2l, saes, batches, floor0, **run)
    assert t0.meta["resumed_from"] == {"stage": "done", "batch": 3}
    assert t0.pairs[0].classification.min_support == 0
    assert t0.counts()[1]["or"] >= result.counts()[1]["or"]
    # other inputs are refused, not mixed in
    with pytest.raises(EvolutionError, match="other token batches"):
        compute_evolution(gpt2_2l, saes, batches[:2], cfg, **run)


def test_bad_layers(gpt2_2l, saes) -> None:
    batches = eval_batches(gpt2_2l, 1, batch_size=2)
    with pytest.raises(EvolutionError, match="two or more"):
        compute_evolution(gpt2_2l, saes[:1], batches)
    with pytest.raises(EvolutionError, match="forward order"):
        compute_evolution(gpt2_2l, saes[::-1], batches)
    with pytest.raises(EvolutionError, match="unknown measures"):
        EvolutionConfig(measures=("spearman",))


@pytest.mark.slow
def test_cli_run_and_page(tmp_path) -> None:
    out, html = tmp_path / "res", tmp_path / "page.html"
    args = ["run", "--batches", "2", "--batch-size", "4", "--out", str(out), "--html", str(html)]
    r = CliRunner().invoke(evolution_app, args)
    assert r.exit_code == 0, r.output
    assert "result in" in r.output and html.exists() and (out / "graph.graphml").exists()
    r = CliRunner().invoke(evolution_app, ["page", str(out), "--html", str(tmp_path / "p2.html")])
    assert r.exit_code == 0 and (tmp_path / "p2.html").exists()
    r = CliRunner().invoke(evolution_app, ["run", "--model", "code-4l", "--batches", "1"])
    assert r.exit_code == 2 and "--sae" in r.output


@pytest.mark.usefixtures("datasets_cache")
def test_cli_reads_tokens_from_a_dataset(tmp_path) -> None:
    import json

    from mechscope.data.corpus import stdlib_texts

    data = tmp_path / "code.jsonl"
    rows = [{"content": t} for t in stdlib_texts("heldout")[:20]]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "res"
    args = ["run", "--dataset", str(data), "--column", "content", "--batches", "2"]
    r = CliRunner().invoke(evolution_app, [*args, "--batch-size", "4", "--out", str(out)])
    assert r.exit_code == 0, r.output
    result = EvolutionResult.load(out)
    assert 0 < result.n_tokens <= 2 * 4 * 128
    r = CliRunner().invoke(evolution_app, ["run", "--dataset", str(data), "--batches", "1"])
    assert r.exit_code == 2 and "content" in r.output  # the missing column, and those present
