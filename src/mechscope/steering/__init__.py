"""Interventions on the real model through hooks, and steered generation with a KV cache.

from mechscope.steering import FeatureEdit, TranscoderEdit, AddDirection, generate, intervene
name, sae = mechscope.sae.resolve("blocks.0.hook_resid_post__local__l1-2", "code-2l")
edit = FeatureEdit("blocks.0.hook_resid_post", sae, feature=12, op="clamp", value=8.0)
out = generate(model, prompt_tokens, [edit], max_new_tokens=20)  # greedy, KV-cached
effect = intervene(model, prompt_tokens, [edit])    # next-token logits, clean vs edited
tc = mechscope.graphs.load_bundled_transcoders("code-2l")[1]  # layer 1
generate(model, prompt_tokens, [TranscoderEdit(tc, feature=468, op="scale", value=3.0)])
"""

from mechscope.errors import SteeringError
from mechscope.steering.effect import InterventionEffect, intervene
from mechscope.steering.generate import Generation, generate, next_token
from mechscope.steering.spec import (
    AblateDirection,
    AddDirection,
    FeatureEdit,
    Intervention,
    TranscoderEdit,
    check_interventions,
    hooks_for,
)

__all__ = [
    "AblateDirection",
    "AddDirection",
    "FeatureEdit",
    "Generation",
    "Intervention",
    "InterventionEffect",
    "SteeringError",
    "TranscoderEdit",
    "check_interventions",
    "generate",
    "hooks_for",
    "intervene",
    "next_token",
]
