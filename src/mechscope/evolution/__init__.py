"""Feature evolution across layers (Balcells et al. 2024): how SAE features of adjacent layers
relate (Pearson, cosine, Jaccard, sufficiency, necessity, mutual information, decoder cosine),
which pass through, disappear, appear or combine (AND / OR), the feature graph's communities, and
an interactive page (docs/evolution.md)."""

from mechscope.evolution.classify import PairClassification, classify_pair, counts_table
from mechscope.evolution.compute import EvolutionConfig, compute_evolution, finalise_pair
from mechscope.evolution.graph import build_graph, communities, community_stats, write_graph
from mechscope.evolution.result import EvolutionResult, LayerInfo, PairResult
from mechscope.evolution.stats import (
    DATA_FREE,
    MEASURES,
    PairStats,
    SparseSimilarity,
    decoder_cosine,
    sparsify,
)

__all__ = [
    "DATA_FREE",
    "MEASURES",
    "EvolutionConfig",
    "EvolutionResult",
    "LayerInfo",
    "PairClassification",
    "PairResult",
    "PairStats",
    "SparseSimilarity",
    "build_graph",
    "classify_pair",
    "communities",
    "community_stats",
    "compute_evolution",
    "counts_table",
    "decoder_cosine",
    "finalise_pair",
    "sparsify",
    "write_graph",
]
