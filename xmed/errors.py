"""Exception types users can catch.

Every error names the file or the config key at fault and says what is wrong with it.

Example:
    >>> from xmed.errors import ImageReadError
    >>> str(ImageReadError("eye.png", "zero-byte file"))
    'cannot read image eye.png: zero-byte file'
"""

from __future__ import annotations

import os


class XmedError(Exception):
    """Base class of every error xmed raises on purpose."""


class ImageReadError(XmedError, ValueError):
    """An image (or DICOM) file could not be read; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")

    def __reduce__(self):  # keep the two-argument signature picklable for DataLoader workers
        return (type(self), (self.path, self.reason))


class DatasetError(XmedError, ValueError):
    """A data set on disk is missing, malformed or inconsistent (a file, a column, a label)."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


class ConfigError(XmedError, ValueError):
    """A configuration key has a wrong or missing value; ``key`` names it."""

    def __init__(self, key: str, reason: str):
        self.key = key
        self.reason = reason
        super().__init__(f"config key {key!r}: {reason}")

    def __reduce__(self):
        return (type(self), (self.key, self.reason))


class CheckpointError(XmedError, ValueError):
    """A model file or folder cannot be loaded; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot load model {self.path}: {reason}")

    def __reduce__(self):
        return (type(self), (self.path, self.reason))
