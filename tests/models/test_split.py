"""Models over device maps (accelerate, through TransformerLens's loader) and in bf16.

The CPU-only checks: a per-module device map goes through the HF loader and gives the unsplit
logits to 1e-5; bad maps and bad combinations fail with a ModelLoadError saying why. The checks
with two real devices (GPU + CPU) are in test_split_gpu.py, run on a GPU machine.
"""

from __future__ import annotations

import shutil

import pytest
import torch

import mechscope
from mechscope import metrics
from mechscope.artefacts import TOKENIZER_DIR, model_dir
from mechscope.models import ModelLoadError
from mechscope.models.lean import LeanModel
from mechscope.patching import patch_task
from mechscope.tasks import make_task

PER_MODULE_CPU = {
    "transformer.wte": "cpu",
    "transformer.wpe": "cpu",
    "transformer.h.0": "cpu",
    "transformer.h.1": "cpu",
    "transformer.ln_f": "cpu",
    "lm_head": "cpu",
}


@pytest.fixture(scope="module")
def tokens(tokenizer):
    return make_task("ioi", tokenizer, n=4, seed=3).clean_tokens


@pytest.fixture(scope="module")
def mapped():
    return mechscope.load_model("code-2l", device_map=PER_MODULE_CPU)


def test_device_map_gives_the_unsplit_logits(gpt2_2l, mapped, tokens):
    with torch.no_grad():
        ref = gpt2_2l(tokens)
        out = mapped(tokens)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(LeanModel(mapped)(tokens), ref, rtol=0, atol=1e-5)


def test_methods_run_unchanged_on_a_mapped_model(gpt2_2l, mapped, tokenizer):
    task = make_task("ioi", tokenizer, n=4, seed=3)
    ref = patch_task(gpt2_2l, task, "resid_pre", positions="all")
    out = patch_task(mapped, task, "resid_pre", positions="all")
    torch.testing.assert_close(out.values, ref.values, rtol=0, atol=1e-5)


def test_local_folder_and_revision_take_a_device_map(gpt2_2l, tokens, tmp_path):
    lean = LeanModel(mechscope.load_model("code-2l", revision="step-500", device_map="cpu"))
    ref = LeanModel(mechscope.load_model("code-2l", revision="step-500"))
    torch.testing.assert_close(lean(tokens), ref(tokens), rtol=0, atol=1e-5)
    for f in [model_dir("code-2l") / "config.json", model_dir("code-2l") / "model.safetensors"]:
        shutil.copy(f, tmp_path)
    for f in TOKENIZER_DIR.iterdir():
        shutil.copy(f, tmp_path)
    local = mechscope.load_model(str(tmp_path), device_map=PER_MODULE_CPU)
    with torch.no_grad():
        torch.testing.assert_close(local(tokens), gpt2_2l(tokens), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"device": "cpu", "device_map": "cpu"}, "either device or device_map"),
        ({"device_map": {"transformer.h.0": "cpu", "transformer.h.1": 0}}, "mixes CPU and GPU"),
        ({"device_map": {"transformer.h.0": "disk"}}, "not supported"),
        ({"dtype": "int8"}, "unknown dtype"),
    ],
)
def test_bad_placements_say_why(kwargs, says):
    with pytest.raises(ModelLoadError, match=says):
        mechscope.load_model("code-2l", **kwargs)


def test_native_models_refuse_a_device_map():
    with pytest.raises(ModelLoadError, match="native blocks"):
        mechscope.load_model("code-attn4", device_map="cpu")


def test_bf16_model_metrics_accumulate_in_fp32(gpt2_2l, tokenizer):
    task = make_task("ioi", tokenizer, n=8, seed=1)
    half = mechscope.load_model("code-2l", dtype="bfloat16")
    with torch.no_grad():
        lo, hi = half(task.clean_tokens), gpt2_2l(task.clean_tokens)
    assert lo.dtype == torch.bfloat16
    diff = metrics.logit_diff(lo, task.answers, task.wrong_answers)
    kl = metrics.kl_div(hi, lo)
    assert diff.dtype == kl.dtype == torch.float32
    ref = metrics.logit_diff(hi, task.answers, task.wrong_answers)
    assert (diff - ref).abs().max() < 0.25  # bf16 weights: ~3 significant digits
    assert float(kl.max()) < 0.05
    # the upcast happens before the subtraction: equal to fp32 arithmetic on the bf16 logits
    torch.testing.assert_close(
        diff, metrics.logit_diff(lo.float(), task.answers, task.wrong_answers)
    )


def test_an_opt_model_runs_on_the_engines(tmp_path):
    """OPT (the architecture of the docs' 7B example, facebook/opt-6.7b) at toy size: the
    bridge and LeanModel give HF's next-token distribution."""
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    cfg = OPTConfig(
        vocab_size=4096,
        hidden_size=64,
        num_hidden_layers=2,
        ffn_dim=256,
        num_attention_heads=4,
        max_position_embeddings=64,
        word_embed_proj_dim=64,
    )
    hf = OPTForCausalLM(cfg).eval()
    hf.save_pretrained(tmp_path)
    for f in TOKENIZER_DIR.iterdir():
        shutil.copy(f, tmp_path)
    bridge = mechscope.load_model(str(tmp_path), device_map="cpu")
    toks = torch.randint(3, 4096, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = hf(toks).logits.log_softmax(-1)
        torch.testing.assert_close(bridge(toks).log_softmax(-1), ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(LeanModel(bridge)(toks).log_softmax(-1), ref, rtol=0, atol=1e-5)
