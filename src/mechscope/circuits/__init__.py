"""Circuit discovery: ACDC's computational graph, exact and batched ACDC, edge attribution
patching (EAP, EAP-IG), evaluation against a ground truth (tracr), faithfulness, rendering.

>>> from mechscope.circuits import acdc, Graph, kl_metric
>>> circuit = acdc(model, task.clean_tokens, task.corrupt_tokens, tau=0.01)   # KL by default
>>> circuit.edges, circuit.heads, circuit.faithfulness
>>> from mechscope.circuits.render import write; write(circuit, "out/acdc")  # .json .dot .html
"""

from mechscope.circuits.acdc import TAU_GRID, acdc, acdc_reference, circuit_values
from mechscope.circuits.eap import eap, eap_scores, top_k_circuit
from mechscope.circuits.evaluate import (
    FaithfulnessCurve,
    Roc,
    auc,
    faithfulness_curve,
    pessimistic_auc,
    roc,
)
from mechscope.circuits.graph import Edge, Graph
from mechscope.circuits.metric import CircuitMetric, kl_metric, l2_metric, task_circuit_metric
from mechscope.circuits.patched import ABLATIONS, CircuitRunner
from mechscope.circuits.result import Circuit
from mechscope.errors import CircuitError

__all__ = [
    "ABLATIONS",
    "TAU_GRID",
    "Circuit",
    "CircuitError",
    "CircuitMetric",
    "CircuitRunner",
    "Edge",
    "FaithfulnessCurve",
    "Graph",
    "Roc",
    "acdc",
    "acdc_reference",
    "auc",
    "circuit_values",
    "eap",
    "eap_scores",
    "faithfulness_curve",
    "kl_metric",
    "l2_metric",
    "pessimistic_auc",
    "roc",
    "task_circuit_metric",
    "top_k_circuit",
]
