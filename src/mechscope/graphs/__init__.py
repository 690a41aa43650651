"""Attribution graphs over per-layer transcoders (circuit-tracer's definitions, docs/graphs.md).

from mechscope.graphs import attribute, graph_json, load_bundled_transcoders, prune
transcoders = load_bundled_transcoders("code-2l")  # or sae.transcoder.load_transcoder_set(path)
graph = attribute(model, transcoders, tokens, prompt="...")   # AttributionGraph
save_graph_json(graph, "graph.json")                          # circuit-tracer / Neuronpedia JSON
"""

from mechscope.graphs.attribution import AttributionGraph, attribute, attribute_literal
from mechscope.graphs.export import graph_json, save_graph_json
from mechscope.graphs.prune import PruneResult, prune
from mechscope.sae.bundled import load_bundled_transcoders

__all__ = [
    "AttributionGraph",
    "PruneResult",
    "attribute",
    "attribute_literal",
    "graph_json",
    "load_bundled_transcoders",
    "prune",
    "save_graph_json",
]
