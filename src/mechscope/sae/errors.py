"""The one exception the SAE package raises for bad input (mismatched widths, hooks, NaNs)."""


class SAEError(ValueError):
    """An SAE, hook, activation or file that does not fit what was asked of it."""
