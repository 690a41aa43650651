"""Degeneracy and the interaction basis (Bushnaq et al. 2024; ApolloResearch/rib's algorithm).

from mechscope.basis import analyse, load_bundled, bundled_data
model = load_bundled("modadd-1l"); x, _ = bundled_data("modadd-1l", "train")
result = analyse(model, x, eval_data=bundled_data("modadd-1l", "test")); print(result.markdown())
"""

from mechscope.basis.ablation import EdgeAblation, ablate_edges, ablation_reference
from mechscope.basis.analysis import analyse
from mechscope.basis.degeneracy import measure_degeneracy
from mechscope.basis.edges import compute_edges, find_modules, interaction_graph, sparsity
from mechscope.basis.interaction import LayerBasis, build_basis
from mechscope.basis.models import MLP, ModAddTransformer, NodeLayerModel
from mechscope.basis.pretrained import bundled_data, list_bundled, load_bundled
from mechscope.basis.result import BasisAnalysis

__all__ = [
    "MLP",
    "BasisAnalysis",
    "EdgeAblation",
    "LayerBasis",
    "ModAddTransformer",
    "NodeLayerModel",
    "ablate_edges",
    "ablation_reference",
    "analyse",
    "build_basis",
    "bundled_data",
    "compute_edges",
    "find_modules",
    "interaction_graph",
    "list_bundled",
    "load_bundled",
    "measure_degeneracy",
    "sparsity",
]
