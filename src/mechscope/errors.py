"""Exceptions shared across mechscope: each says what was wrong and what to do instead."""


class ModelLoadError(ValueError):
    """A model name, path, revision or architecture that mechscope cannot load."""


class PatchingError(ValueError):
    """A patch, metric or input that the patching engine cannot run (with what to do instead)."""


class MetricError(ValueError):
    """A metric name that the one registry (`mechscope.metrics.for_task`) does not know, or a
    metric missing what it needs (KL without the clean run's logits)."""


class SAEError(ValueError):
    """An SAE, hook, activation or file that does not fit what was asked of it."""


class BasisError(ValueError):
    """A model, node layer, basis or input that the degeneracy / interaction-basis code cannot
    use."""


class RegionsError(ValueError):
    """A layer, path, prompt set or model that the stable-regions analysis cannot use."""


class CircuitError(ValueError):
    """A circuit-discovery input (graph node, threshold, task, metric, file) that cannot be used."""


class DirectionsError(ValueError):
    """A hook, SAE, direction family, length sweep or input that the sensitive-directions
    experiments cannot use (with what to do instead)."""


class EvolutionError(ValueError):
    """A layer set, SAE, measure, threshold or result file the feature-evolution code cannot use."""


class DataError(ValueError):
    """A dataset source, column or token stream that cannot be used (with what to do instead)."""


class StoreError(DataError):
    """An activation store that is missing, incomplete, truncated or does not fit the request."""


class SweepError(ValueError):
    """A sweep config, output folder or backend that cannot be used (with what to do instead)."""


class GraphError(ValueError):
    """A prompt, transcoder set, feature or graph file that attribution graphs cannot use (with
    what to do instead)."""
