"""xmed: explainable glaucoma screening on colour fundus photographs.

Example:
    >>> import xmed
    >>> xmed.FINDINGS[:2]
    ('ANRS', 'ANRI')
"""

from xmed.findings import FINDINGS, VCDR
from xmed import errors
from xmed.version import __version__

__all__ = ["FINDINGS", "VCDR", "counterfactual", "errors", "explain", "load_model", "rationale", "__version__"]


def __getattr__(name: str):
    # heavy parts (torch, timm) load on first use, so `import xmed` stays light
    if name == "load_model":
        from xmed.models.export import load_model

        return load_model
    if name == "explain":
        import importlib

        return importlib.import_module("xmed.explain")  # a callable module: xmed.explain(model, images)
    if name == "counterfactual":
        import importlib

        return importlib.import_module("xmed.explain.counterfactual")  # callable: xmed.counterfactual(model, images)
    if name == "rationale":
        from xmed.explain.rationale import rationale

        return rationale
    raise AttributeError(f"module 'xmed' has no attribute {name!r}")
