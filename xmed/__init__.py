"""xmed: explainable glaucoma screening on colour fundus photographs.

Example:
    >>> import xmed
    >>> xmed.FINDINGS[:2]
    ('ANRS', 'ANRI')
"""

from xmed.findings import FINDINGS, VCDR
from xmed import errors

__version__ = "0.1.0"
__all__ = ["FINDINGS", "VCDR", "errors", "__version__"]
