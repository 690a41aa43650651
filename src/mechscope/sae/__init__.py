"""Sparse autoencoders: training (local, e2e, e2e+downstream), evaluation, SAELens format.

from mechscope.sae import TrainConfig, train_sae, evaluate_sae, save_saelens, load_saelens
result = train_sae(TrainConfig(model="code-2l", hook_name="blocks.0.hook_resid_post"))
ev = evaluate_sae(model, result.sae, eval_batches(model, 8))  # mechscope.data.batches
"""

from mechscope.errors import SAEError
from mechscope.sae.config import SAEConfig, TrainConfig
from mechscope.sae.evaluate import SAEEval, eval_table, evaluate_sae, pareto_figure
from mechscope.sae.model import SparseAutoencoder
from mechscope.sae.saelens_format import load_saelens, load_saelens_from_hub, save_saelens
from mechscope.sae.sources import resolve
from mechscope.sae.train import TrainResult, train_sae

__all__ = [
    "SAEConfig",
    "SAEError",
    "SAEEval",
    "SparseAutoencoder",
    "TrainConfig",
    "TrainResult",
    "eval_table",
    "evaluate_sae",
    "load_saelens",
    "load_saelens_from_hub",
    "pareto_figure",
    "resolve",
    "save_saelens",
    "train_sae",
]
