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


class PathError(XmedError, ValueError):
    """Base of the errors about one file or folder: ``path`` says which, ``reason`` why."""

    message = "{path}: {reason}"

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(self.message.format(path=self.path, reason=reason))

    def __reduce__(self):  # keep the two-argument signature picklable for DataLoader workers
        return (type(self), (self.path, self.reason))


class ImageReadError(PathError):
    """An image (or DICOM) file could not be read."""

    message = "cannot read image {path}: {reason}"


class DatasetError(PathError):
    """A data set on disk is missing, malformed or inconsistent (a file, a column, a label)."""


class CheckpointError(PathError):
    """A model file or folder cannot be loaded."""

    message = "cannot load model {path}: {reason}"


class UnsafeConfigError(PathError):
    """A config read from disk names something xmed will not import or call (a ``_target_``
    outside the classes its own configs name); nothing in the file was run."""

    message = "refused config {path}: {reason}"


class InputError(XmedError, ValueError):
    """An argument given to a model, an explainer or a metric is not what it takes; ``name`` says
    which argument, ``reason`` what is wrong and what to pass instead."""

    def __init__(self, name: str, reason: str):
        self.name = name
        self.reason = reason
        super().__init__(f"{name}: {reason}")

    def __reduce__(self):
        return (type(self), (self.name, self.reason))


class ConfigError(XmedError, ValueError):
    """A configuration key has a wrong or missing value; ``key`` names it."""

    def __init__(self, key: str, reason: str):
        self.key = key
        self.reason = reason
        super().__init__(f"config key {key!r}: {reason}")

    def __reduce__(self):
        return (type(self), (self.key, self.reason))


class QualityWarning(UserWarning):
    """An image failed the image-quality gate (:mod:`xmed.data.quality`): the model's output for
    it is flagged and is not to be relied on."""


class SecurityWarning(UserWarning):
    """A setting leaves patient data less protected than it should be, e.g. DICOM pseudonyms salted
    with xmed's public default salt (set ``XMED_DICOM_SALT``)."""
