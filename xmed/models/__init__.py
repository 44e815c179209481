"""Models: timm backbones with diagnosis, finding and vCDR heads; training; export.

Example:
    >>> from xmed.models import FundusClassifier, TARGETS
    >>> TARGETS[:2]
    ('glaucoma', 'ANRS')
"""

from xmed.models.classifier import TARGETS, DataConfig, FundusClassifier, target_scalar
from xmed.models.autoencoder import FundusAutoencoder, export_autoencoder, load_autoencoder
from xmed.models.export import export_model, load_model

__all__ = ["TARGETS", "AutoencoderModule", "DataConfig", "FundusAutoencoder", "FundusClassifier", "FundusModule",
           "export_autoencoder", "export_model", "load_autoencoder", "load_model", "target_scalar"]


def __getattr__(name):  # Lightning is imported only by those who train
    if name == "FundusModule":
        from xmed.models.module import FundusModule

        return FundusModule
    if name == "AutoencoderModule":
        from xmed.models.autoencoder import AutoencoderModule

        return AutoencoderModule
    raise AttributeError(f"module 'xmed.models' has no attribute {name!r}")
