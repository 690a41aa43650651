"""Attribution graphs over per-layer transcoders (circuit-tracer's definitions, docs/graphs.md).

from mechscope.graphs import attribute, graph_json, prune
graph = attribute(model, transcoders, tokens, prompt="...")   # AttributionGraph
save_graph_json(graph, "graph.json")                          # circuit-tracer / Neuronpedia JSON
"""

from mechscope.graphs.attribution import AttributionGraph, attribute, attribute_literal
from mechscope.graphs.export import graph_json, save_graph_json
from mechscope.graphs.prune import PruneResult, prune

__all__ = [
    "AttributionGraph",
    "PruneResult",
    "attribute",
    "attribute_literal",
    "graph_json",
    "prune",
    "save_graph_json",
]
