"""SAEs on every declared family's toy model, at a residual hook and an MLP hook: training (local
and e2e), evaluation against a literal computation through the bridge's hooks, training from an
activation store equal to training from the live model, and the SAELens round trip."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sae_lens  # a dev dependency: these tests must run, never skip
import torch
import torch.nn.functional as F

from mechscope.models.declare import FAMILIES
from mechscope.models.lean import as_lean
from mechscope.sae import (
    SAEConfig,
    SparseAutoencoder,
    TrainConfig,
    evaluate_sae,
    load_saelens,
    save_saelens,
    train_sae,
)
from mechscope.sae.activations import collect, hook_width
from mechscope.sae.store import ActivationStore, write_store

FAMILY = pytest.mark.parametrize("family", sorted(FAMILIES))
# the residual stream, and the MLP's hidden activation (gated MLPs: act(gate) * up), width d_mlp
HOOKS = ["blocks.0.hook_resid_post", "blocks.0.mlp.hook_post"]


def batches(n: int, seed: int = 0, batch: int = 4, pos: int = 16) -> Iterator[torch.Tensor]:
    """Random token batches [batch, pos] with BOS (0, the toys' only special token) first; 16
    positions exceed the 8-token sliding windows of Mistral and Gemma 2/3."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        t = torch.randint(1, 4096, (batch, pos), generator=g)
        t[:, 0] = 0
        yield t


def tiny(family: str, hook: str, **kw) -> TrainConfig:
    base = {"n_steps": 6, "batch_size": 4, "expansion": 2, "warmup_steps": 2, "lr": 3e-3}
    base |= {"model": family, "hook_name": hook, "sparsity_coeff": 0.1}
    return TrainConfig(**(base | kw))


def random_sae(d_in: int, hook: str, seed: int = 3) -> SparseAutoencoder:
    """An untrained SAE with nonzero biases (its reconstruction is far from perfect)."""
    sae = SparseAutoencoder(SAEConfig(d_in=d_in, d_sae=2 * d_in, hook_name=hook), seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (sae.b_enc, sae.b_dec):
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return sae


def assert_same_sae(a, b) -> None:
    for name, p in a.sae.state_dict().items():
        assert torch.equal(p, b.sae.state_dict()[name]), name
    assert a.history == b.history


@FAMILY
@pytest.mark.parametrize("loss", ["local", "e2e"])
def test_training_decreases_the_loss(family, loss, toy_model) -> None:
    """Six steps on one fixed batch: the loss goes down at both hooks, decoder rows stay unit.

    Adam moves each parameter by about lr per step whatever the gradient's scale, so lr follows
    the activations' scale (the toys' hooks range from 1e-4 (OLMo-2's mlp.hook_post) to 1)."""
    lean = as_lean(toy_model(family))
    fixed = next(batches(1))
    for hook in HOOKS:
        scale = float(collect(lean, fixed, hook)[:, 1:].std())
        cfg = tiny(family, hook, loss=loss, lr=min(3e-3, 0.03 * scale))
        result = train_sae(cfg, lean, (fixed for _ in range(cfg.n_steps)), progress=False)
        h = result.history
        assert len(h) == 6 and h[-1]["loss"] < h[0]["loss"], (hook, [r["loss"] for r in h])
        assert ("mse" in h[0]) == (loss == "local") and ("kl" in h[0]) == (loss == "e2e")
        assert result.sae.d_in == hook_width(lean, hook)
        norms = result.sae.W_dec.norm(dim=-1)
        torch.testing.assert_close(norms, torch.ones_like(norms))


@FAMILY
def test_evaluation_equals_a_literal_computation_through_the_bridge(family, toy_model) -> None:
    """L0, explained variance, CE recovered and the KL score from `bridge.run_with_hooks` by the
    SAELens definitions (BOS positions neither spliced nor counted)."""
    bridge = toy_model(family)
    toks = list(batches(2, seed=1))
    for hook in HOOKS:
        sae = random_sae(hook_width(as_lean(bridge), hook), hook)
        ev = evaluate_sae(bridge, sae, toks)
        xs, codes, ce, kl = [], [], {"orig": [], "sae": [], "abl": []}, {"sae": [], "abl": []}
        with torch.no_grad():
            for t in toks:
                keep = t != 0
                grab: dict[str, torch.Tensor] = {}

                def spliced(x, hook, keep=keep, sae=sae):
                    return torch.where(keep[..., None], sae(x), x)

                def zero(x, hook):
                    return torch.zeros_like(x)

                logits = {
                    "orig": bridge.run_with_hooks(
                        t, fwd_hooks=[(hook, lambda x, hook, grab=grab: grab.update(x=x))]
                    ),
                    "sae": bridge.run_with_hooks(t, fwd_hooks=[(hook, spliced)]),
                    "abl": bridge.run_with_hooks(t, fwd_hooks=[(hook, zero)]),
                }
                xs.append(grab["x"][keep])
                codes.append(sae.encode(grab["x"][keep]))
                lp = {k: v.float().log_softmax(-1) for k, v in logits.items()}
                for k, v in lp.items():  # next-token CE at kept positions but the last
                    nll = -v[:, :-1].gather(-1, t[:, 1:, None])[..., 0]
                    ce[k].append(nll[keep[:, :-1]])
                for k in ("sae", "abl"):
                    p = lp["orig"].exp()
                    kl[k].append((p * (lp["orig"] - lp[k])).sum(-1)[keep])
        x, c = torch.cat(xs).double(), torch.cat(codes)
        x_hat = sae.decode(c).detach().double()
        mse = (x - x_hat).pow(2).sum(-1).mean()
        var = x.pow(2).sum(-1).mean() - x.mean(0).pow(2).sum()
        ce_m = {k: torch.cat(v).mean() for k, v in ce.items()}
        kl_m = {k: torch.cat(v).mean() for k, v in kl.items()}
        assert ev.n_tokens == x.shape[0] == 2 * 4 * 15
        assert ev.l0 == pytest.approx(float((c != 0).sum(-1).float().mean()), rel=1e-6)
        assert ev.explained_variance == pytest.approx(float(1 - mse / var), rel=1e-4, abs=1e-5)
        assert ev.cossim == pytest.approx(float(F.cosine_similarity(x, x_hat, -1).mean()), rel=1e-4)
        # the toys barely use these hooks, so CE_zero_abl - CE_orig is small and the ratios
        # magnify float error: compare their terms, and the ratios to their definitions
        for k, field in (("orig", "ce_orig"), ("sae", "ce_sae"), ("abl", "ce_zero_abl")):
            assert getattr(ev, field) == pytest.approx(float(ce_m[k]), rel=1e-5), field
        assert ev.kl_sae == pytest.approx(float(kl_m["sae"]), rel=1e-3, abs=1e-7)
        assert ev.kl_zero_abl == pytest.approx(float(kl_m["abl"]), rel=1e-3, abs=1e-7)
        assert ev.ce_recovered == pytest.approx(
            (ev.ce_zero_abl - ev.ce_sae) / (ev.ce_zero_abl - ev.ce_orig)
        )
        assert ev.kl_score == pytest.approx((ev.kl_zero_abl - ev.kl_sae) / ev.kl_zero_abl)
        assert ev.kl_sae > 1e-6  # the untrained SAE does change the output


@FAMILY
def test_store_training_equals_live(family, toy_model, tmp_path) -> None:
    lean = as_lean(toy_model(family))
    store = write_store(
        lean, HOOKS, batches(6), tmp_path, shard_tokens=5 * 16, model_name=family, progress=False
    )
    assert store.hooks == {h: hook_width(lean, h) for h in HOOKS}
    for hook in HOOKS:
        cfg = tiny(family, hook)
        live = train_sae(cfg, lean, batches(6), progress=False)
        stored = train_sae(cfg, store=ActivationStore(store.path), progress=False)
        assert_same_sae(live, stored)


@FAMILY
def test_saelens_round_trip(family, toy_model, tmp_path) -> None:
    """A trained SAE saved in SAELens format loads in sae_lens and in mechscope with the same
    codes and reconstructions of the model's activations."""
    lean = as_lean(toy_model(family))
    toks = next(batches(1, seed=2))
    with torch.no_grad():
        _, cache = lean.run_with_cache(toks)
    for hook in HOOKS:
        sae = train_sae(tiny(family, hook, n_steps=3), lean, batches(3), progress=False).sae
        save_saelens(sae, tmp_path / hook)
        theirs = sae_lens.SAE.load_from_disk(str(tmp_path / hook))
        ours = load_saelens(tmp_path / hook)
        assert theirs.cfg.metadata.hook_name == ours.cfg.hook_name == hook
        x = cache[hook]
        with torch.no_grad():
            torch.testing.assert_close(theirs.encode(x), sae.encode(x), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(theirs(x), sae(x), atol=1e-5, rtol=1e-5)
            assert torch.equal(ours(x), sae(x))
