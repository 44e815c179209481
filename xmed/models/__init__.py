"""Models: timm backbones with diagnosis, finding and vCDR heads; training; export.

Example:
    >>> from xmed.models import FundusClassifier, TARGETS
    >>> TARGETS[:2]
    ('glaucoma', 'ANRS')
"""

from xmed.models.classifier import TARGETS, DataConfig, FundusClassifier, target_scalar
from xmed.models.export import export_model, load_model

__all__ = ["TARGETS", "DataConfig", "FundusClassifier", "FundusModule", "export_model",
           "load_model", "target_scalar"]


def __getattr__(name):  # Lightning is imported only by those who train
    if name == "FundusModule":
        from xmed.models.module import FundusModule

        return FundusModule
    raise AttributeError(f"module 'xmed.models' has no attribute {name!r}")
