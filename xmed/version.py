"""The library's version: ``xmed.__version__``, and the ``xmed_version`` every exported model records.

Example:
    >>> __version__
    '0.1.0'
"""

__version__ = "0.1.0"
