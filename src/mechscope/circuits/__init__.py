"""Circuit discovery: ACDC's computational graph, exact and batched ACDC, edge attribution
patching (EAP, EAP-IG), evaluation against a ground truth (tracr), faithfulness on held-out
prompts, rendering.

>>> from mechscope.circuits import acdc_task
>>> search, test = make_split("docstring", tokenizer, n=16, seed=0)   # mechscope.tasks
>>> circuit = acdc_task(model, search, test, tau=0.01)   # found on search, measured on test
>>> circuit.edges, circuit.heads, circuit.faithfulness, circuit.search.faithfulness
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
from mechscope.circuits.heldout import acdc_task, eap_task, measure
from mechscope.circuits.metric import CircuitMetric, kl_metric, l2_metric, task_circuit_metric
from mechscope.circuits.patched import ABLATIONS, CircuitRunner
from mechscope.circuits.result import Circuit, MetricValues
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
    "MetricValues",
    "Roc",
    "acdc",
    "acdc_reference",
    "acdc_task",
    "auc",
    "circuit_values",
    "eap",
    "eap_scores",
    "eap_task",
    "faithfulness_curve",
    "kl_metric",
    "l2_metric",
    "measure",
    "pessimistic_auc",
    "roc",
    "task_circuit_metric",
    "top_k_circuit",
]
