"""Exceptions shared across mechscope: each says what was wrong and what to do instead.

Every error derives from `MechscopeError` (a `ValueError`), so a command catches one type and
`except ValueError` keeps working.
"""


class MechscopeError(ValueError):
    """Base of every mechscope error: an input, file or model that cannot be used as asked."""


class ModelLoadError(MechscopeError):
    """A model name, path, revision or architecture that mechscope cannot load."""


class PatchingError(MechscopeError):
    """A patch, metric or input that the patching engine cannot run (with what to do instead)."""


class MetricError(MechscopeError):
    """A metric name that the one registry (`mechscope.metrics.for_task`) does not know, or a
    metric missing what it needs (KL without the clean run's logits)."""


class SAEError(MechscopeError):
    """An SAE, hook, activation or file that does not fit what was asked of it."""


class BasisError(MechscopeError):
    """A model, node layer, basis or input that the degeneracy / interaction-basis code cannot
    use."""


class RegionsError(MechscopeError):
    """A layer, path, prompt set or model that the stable-regions analysis cannot use."""


class CircuitError(MechscopeError):
    """A circuit-discovery input (graph node, threshold, task, metric, file) that cannot be used."""


class DirectionsError(MechscopeError):
    """A hook, SAE, direction family, length sweep or input that the sensitive-directions
    experiments cannot use (with what to do instead)."""


class EvolutionError(MechscopeError):
    """A layer set, SAE, measure, threshold or result file the feature-evolution code cannot use."""


class DataError(MechscopeError):
    """A dataset source, column or token stream that cannot be used (with what to do instead)."""


class StoreError(DataError):
    """An activation store that is missing, incomplete, truncated or does not fit the request."""


class SweepError(MechscopeError):
    """A sweep config, output folder or backend that cannot be used (with what to do instead)."""


class TaskError(MechscopeError):
    """A task's prompts or answers do not fit the tokenizer (lengths, multi-token answers)."""


class OutputError(MechscopeError):
    """An output path that cannot be written (a file where a folder is wanted, a folder where a
    file is, a read-only or full disk): which path, why, and what to do."""


class OptionError(MechscopeError):
    """A command-line option out of range, not finite, not one of its choices, or too big for
    this machine's memory (the message names the option, the value and what is accepted)."""


class SteeringError(MechscopeError):
    """An intervention (hook, SAE, feature, direction, positions) or generation request that does
    not fit the model (with what to do instead)."""


class GraphError(MechscopeError):
    """A prompt, transcoder set, feature or graph file that attribution graphs cannot use (with
    what to do instead)."""
