"""`validate.patch_bytes` is true to the patching engine: its cache term is exactly the bytes the
engine caches for a sweep, and the whole estimate is within a factor 2 of a sweep's measured
peak memory (benchmarks/patch_memory.py: the resident set's high-water mark in a fresh
process, Linux /proc)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mechscope import validate as V
from mechscope.models.lean import as_lean
from mechscope.patching.engine import make_runs, sweep_hooks
from mechscope.patching.specs import COMPONENTS
from mechscope.tasks import make_task

FACTOR = 2.0  # estimate / measured peak in [1 / FACTOR, FACTOR]


def cached_bytes(*caches: dict[str, torch.Tensor] | None) -> int:
    """Bytes of the distinct storages behind the caches' tensors (views count once)."""
    storages = {}
    for cache in caches:
        for t in (cache or {}).values():
            s = t.untyped_storage()
            storages[s.data_ptr()] = s.nbytes()
    return sum(storages.values())


def test_estimate_knows_the_component_layouts():
    per_head = {c for c, (_, layout) in COMPONENTS.items() if layout == "pos_head"}
    assert set(V.PER_HEAD_COMPONENTS) == per_head


@pytest.mark.parametrize("name", ["attn4", "gpt2_2l", "llama_2l"])
@pytest.mark.parametrize("direction", ["denoising", "zero"])
def test_cache_term_is_what_the_engine_caches(name, direction, request):
    model = request.getfixturevalue(name)
    lean = as_lean(model)
    task = make_task("docstring", model.tokenizer, n=3, seed=0)
    n, T = task.clean_tokens.shape
    dims = V.model_dims(model)
    assert dims is not None
    for component in ("resid_pre", "z", "result", "q_input", "k", "pattern"):
        runs = make_runs(
            lean, task.clean_tokens, task.corrupt_tokens, direction, sweep_hooks(lean, component)
        )
        got = cached_bytes(runs.base_cache, runs.source_cache)
        assert got == V.patch_cache_bytes(dims, n, T, component, direction), component


BENCH = Path(__file__).parents[2] / "benchmarks" / "patch_memory.py"


@pytest.mark.slow
@pytest.mark.parametrize("component", ["resid_pre", "z"])
def test_estimate_is_within_a_factor_of_the_measured_peak(component):
    """code-2l, 100 prompt pairs of 41 tokens, 64 MB chunks: caches and one chunk of about
    80 MB each, far above the allocator's noise."""
    out = subprocess.run(
        [sys.executable, BENCH, "code-2l", component, "--n", "100", "--memory-mb", "64"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert 1 / FACTOR <= r["estimate_over_peak"] <= FACTOR, r
