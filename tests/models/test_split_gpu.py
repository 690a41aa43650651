"""Models split over two real devices: some blocks on the GPU, the others on the CPU.

Run on a machine with CUDA: `pytest -m gpu tests/models/test_split_gpu.py` (the default run
deselects the `gpu` mark; without CUDA these tests fail rather than pass vacuously). Each method
runs unchanged on the split model and gives what it gives on the CPU to 1e-4.
"""

from __future__ import annotations

import pytest
import torch

import mechscope
from mechscope.circuits import acdc
from mechscope.models.lean import LeanModel
from mechscope.patching import attribution_patch, patch_task, task_metric
from mechscope.regions.interpolate import PathRunner, interpolate_pairs
from mechscope.sae import TrainConfig, evaluate_sae, train_sae
from mechscope.tasks import make_task

pytestmark = pytest.mark.gpu
TOL = {"rtol": 1e-4, "atol": 1e-4}


@pytest.fixture(scope="module", autouse=True)
def cuda():
    assert torch.cuda.is_available(), "these tests need a CUDA device (pytest -m gpu on a GPU box)"
    torch.backends.cuda.matmul.allow_tf32 = False


def split(name: str) -> LeanModel:
    """Even blocks on the GPU, odd ones on the CPU, the unembedding on the GPU."""
    lean = LeanModel(mechscope.load_model(name))
    return lean.dispatch(["cuda" if l % 2 == 0 else "cpu" for l in range(lean.n_layers)], "cuda")


@pytest.fixture(scope="module")
def attn4_pair():
    return LeanModel(mechscope.load_model("code-attn4")), split("code-attn4")


@pytest.fixture(scope="module")
def gpt2_pair():
    return LeanModel(mechscope.load_model("code-2l")), split("code-2l")


def test_split_forward_hooks_and_pieces(gpt2_pair, tokenizer):
    cpu, gpu = gpt2_pair
    toks = make_task("ioi", tokenizer, n=4, seed=0).clean_tokens
    ref, ref_cache = cpu.run_with_cache(toks)
    out, cache = gpu.run_with_cache(toks)
    assert out.device.type == "cuda"  # results come back on the embedding's device
    assert cache["blocks.0.hook_resid_pre"].device.type == "cuda"
    assert cache["blocks.1.hook_resid_pre"].device.type == "cpu"  # hooks see the block's device
    torch.testing.assert_close(out.cpu(), ref, **TOL)
    for name in ref_cache:
        torch.testing.assert_close(cache[name].cpu(), ref_cache[name], **TOL)
    # a hook may return a tensor on another device: it is moved to the block's
    zero = {"blocks.1.hook_attn_out": lambda x: torch.zeros_like(x, device="cuda")}
    torch.testing.assert_close(gpu(toks, hooks=zero).cpu(), cpu(toks, hooks=zero), **TOL)
    resid = ref_cache["blocks.1.hook_resid_pre"]
    torch.testing.assert_close(
        gpu(toks, start_layer=1, resid=resid, logit_pos=[-1]).cpu(),
        cpu(toks, start_layer=1, resid=resid, logit_pos=[-1]),
        **TOL,
    )
    heads = torch.arange(2)
    x = resid.unsqueeze(2).expand(-1, -1, 2, -1)
    torch.testing.assert_close(gpu.head_qkv(1, x, 0, heads), cpu.head_qkv(1, x, 0, heads), **TOL)
    torch.testing.assert_close(gpu.mlp_out(1, resid), cpu.mlp_out(1, resid), **TOL)
    torch.testing.assert_close(gpu.unembed(resid), cpu.unembed(resid), **TOL)


def test_patching_and_attribution_on_a_split_model(attn4_pair, tokenizer):
    cpu, gpu = attn4_pair
    task = make_task("docstring", tokenizer, n=8, seed=0)
    for component in ("z", "resid_pre"):
        ref = patch_task(cpu, task, component)
        out = patch_task(gpu, task, component)
        torch.testing.assert_close(out.values.cpu(), ref.values, **TOL)
    m = task_metric(task)
    ref_a = attribution_patch(cpu, task.clean_tokens, task.corrupt_tokens, m, ["z"])
    out_a = attribution_patch(gpu, task.clean_tokens, task.corrupt_tokens, m, ["z"])
    torch.testing.assert_close(out_a["z"].values.cpu(), ref_a["z"].values, **TOL)


def test_acdc_on_a_split_model(attn4_pair, tokenizer):
    cpu, gpu = attn4_pair
    task = make_task("docstring", tokenizer, n=8, seed=0)
    ref = acdc(cpu, task.clean_tokens, task.corrupt_tokens, tau=0.02)
    out = acdc(gpu, task.clean_tokens, task.corrupt_tokens, tau=0.02)
    assert torch.equal(out.present.cpu(), ref.present)


def test_sae_training_and_evaluation_on_a_split_model(gpt2_pair, tokenizer):
    cpu, gpu = gpt2_pair
    toks = make_task("ioi", tokenizer, n=16, seed=1).clean_tokens
    cfg = TrainConfig(model="code-2l", hook_name="blocks.1.hook_resid_pre", n_steps=5, expansion=2)
    ref = train_sae(cfg, cpu, [toks] * 5, progress=False)
    out = train_sae(cfg, gpu, [toks] * 5, progress=False)
    assert out.sae.W_dec.device.type == "cuda"  # trained on the model's main device
    torch.testing.assert_close(out.sae.W_dec.cpu(), ref.sae.W_dec, rtol=1e-3, atol=1e-3)
    ev_ref, ev = evaluate_sae(cpu, ref.sae, [toks]), evaluate_sae(gpu, ref.sae, [toks])
    assert ev.ce_recovered == pytest.approx(ev_ref.ce_recovered, abs=1e-3)


def test_regions_on_a_split_model(gpt2_pair, tokenizer):
    cpu, gpu = gpt2_pair
    toks = make_task("ioi", tokenizer, n=4, seed=2).clean_tokens
    first, second = torch.arange(2), torch.arange(2, 4)
    ref = interpolate_pairs(PathRunner(cpu, toks, layer=1), first, second, n_steps=5)
    out = interpolate_pairs(PathRunner(gpu, toks, layer=1), first, second, n_steps=5)
    torch.testing.assert_close(out.kl.cpu(), ref.kl, **TOL)


def test_an_all_gpu_device_map_through_the_hf_loader(tokenizer):
    toks = make_task("ioi", tokenizer, n=4, seed=0).clean_tokens
    names = ["transformer.wte", "transformer.wpe", "transformer.h.0", "transformer.h.1"]
    mapped = mechscope.load_model(
        "code-2l", device_map={**dict.fromkeys(names, 0), "transformer.ln_f": 0, "lm_head": 0}
    )
    ref = mechscope.load_model("code-2l")
    with torch.no_grad():
        torch.testing.assert_close(mapped(toks.cuda()).cpu(), ref(toks), **TOL)
    lean = LeanModel(mapped)
    assert lean.device.type == "cuda"
    torch.testing.assert_close(lean(toks).cpu(), LeanModel(ref)(toks), **TOL)


def test_bf16_on_the_gpu_keeps_metrics_in_fp32(tokenizer):
    task = make_task("docstring", tokenizer, n=8, seed=0)
    half = mechscope.load_model("code-attn4", device="cuda", dtype=torch.bfloat16)
    full = mechscope.load_model("code-attn4")
    out, ref = patch_task(half, task, "z"), patch_task(full, task, "z")
    assert out.values.dtype == torch.float32
    torch.testing.assert_close(out.values.cpu(), ref.values, rtol=0, atol=0.3)


def test_directions_on_a_split_model(gpt2_pair, tokenizer):
    from mechscope.directions.perturb import clean_run, perturbed_kl

    cpu, gpu = gpt2_pair
    toks = make_task("ioi", tokenizer, n=4, seed=0).clean_tokens
    hook = "blocks.0.hook_resid_post"
    run_ref, run = clean_run(cpu, toks, hook), clean_run(gpu, toks, hook)
    d = torch.randn(2, *run_ref.x.shape, generator=torch.Generator().manual_seed(0))
    ref = perturbed_kl(cpu, run_ref, d, [0.5, 2.0])
    out = perturbed_kl(gpu, run, d, [0.5, 2.0])
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-3, atol=1e-5)


def test_evolution_on_a_split_model(gpt2_pair):
    from mechscope.data.batches import eval_batches
    from mechscope.evolution import EvolutionConfig, compute_evolution
    from mechscope.sae.bundled import load_bundled

    cpu, gpu = gpt2_pair
    names = [f"blocks.{l}.hook_resid_post__local__l1-1" for l in (0, 1)]
    saes = [load_bundled("code-2l", n) for n in names]
    batches = eval_batches(cpu, 2, batch_size=4)
    cfg = EvolutionConfig(algorithms=("louvain",))
    ref = compute_evolution(cpu, saes, batches, cfg, names=names, device="cpu")
    out = compute_evolution(gpu, saes, batches, cfg, names=names)
    assert out.n_tokens == ref.n_tokens and out.counts() == ref.counts()
