"""Prepared eyes kept in memory that every loader worker of a split shares.

A loader worker that keeps its own prepared eyes (decoded, cropped, fitted to the input square)
only finds an eye again when the shuffle sends that eye back to *it*: with 16 workers each holds
about a sixteenth of the split after an epoch, so epochs go on decoding for dozens of epochs, and
every worker fills its own copy. :class:`SharedEyeStore` keeps one copy in shared memory, mapped
before the workers start: whichever worker prepares an eye first, every worker reads it from the
second epoch on.

Written here because neither torch nor albumentations keeps a dataset's samples across worker
processes. The memory is an anonymous shared mapping (not ``/dev/shm``, whose size containers
often limit), committed only as eyes are written. :class:`~xmed.data.datamodule.FundusDataModule`
forks its workers where the system forks safely (Linux, whatever the interpreter's default). A
store copied into a worker that was started afresh (``spawn``, ``forkserver``: macOS, or a loader
of your own) cannot reach the mapping; it says so (:attr:`SharedEyeStore.available`) and its
split keeps eyes per worker instead.

Example:
    >>> import numpy as np
    >>> store = SharedEyeStore(slots=2, side=4)
    >>> eye = {"image": np.full((4, 4, 3), 7, np.uint8), "label": 1.0, "vcdr": 0.5,
    ...        "findings": np.zeros(10, np.float32), "masks": {}, "meta": {"id": "a", "eye": "OD"}}
    >>> store.put(0, eye), store.filled()
    (True, 1)
    >>> again = store.get(0); int(again["image"][0, 0, 0]), again["meta"]["id"], again["findings"].dtype.name
    (7, 'a', 'float32')
    >>> store.get(1) is None
    True
"""

from __future__ import annotations

import json
import logging
import math
import mmap
import multiprocessing
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
#: bytes per eye for its fields other than the image (JSON: label, vCDR, findings, meta)
FIELD_BYTES = 1024
_READY = 1  # a slot's state byte; 0: empty


class SharedEyeStore:
    """``slots`` prepared eyes of ``side×side×3`` uint8 images and their small fields, in memory
    shared with the processes forked after it was made.

    An eye is stored at its position in the split. Only eyes without masks are stored (masks
    vary in number and name); :meth:`put` says whether it kept the eye. A slot is published
    under a lock after its bytes are written, so a reader never sees half an eye on any CPU.
    """

    def __init__(self, slots: int, side: int):
        self.slots, self.side = int(slots), int(side)
        self.image_bytes = self.side * self.side * 3
        size = max(1, self.slots * (self.image_bytes + FIELD_BYTES + 1))
        self._memory: mmap.mmap | None = mmap.mmap(-1, size)  # anonymous and shared: kept across fork
        self._lock = multiprocessing.Lock()
        self._views()

    @classmethod
    def for_budget(cls, eyes: int, side: int, budget_bytes: int) -> "SharedEyeStore | None":
        """A store for as many of ``eyes`` as ``budget_bytes`` holds (None when not one fits, or
        where the system has no shared memory or process locks: eyes are then kept per process)."""
        slots = min(eyes, budget_bytes // (side * side * 3 + FIELD_BYTES + 1))
        if slots <= 0:
            return None
        try:
            return cls(slots, side)
        except OSError as err:  # e.g. a sandbox without POSIX semaphores
            log.warning("prepared eyes are kept per loader worker: no shared store (%s)", err)
            return None

    def _views(self) -> None:
        buffer = self._memory
        n, image_bytes = self.slots, self.image_bytes
        self._images = np.frombuffer(buffer, np.uint8, n * image_bytes).reshape(n, self.side, self.side, 3)
        self._fields = np.frombuffer(buffer, np.uint8, n * FIELD_BYTES, offset=n * image_bytes).reshape(n, FIELD_BYTES)
        self._state = np.frombuffer(buffer, np.uint8, n, offset=n * (image_bytes + FIELD_BYTES))

    @property
    def available(self) -> bool:
        """False in a process the store was copied into rather than forked into."""
        return self._memory is not None

    def filled(self) -> int:
        """How many eyes it holds."""
        if not self.available:
            return 0
        with self._lock:
            return int(np.count_nonzero(self._state == _READY))

    def get(self, position: int) -> dict | None:
        """The eye at ``position`` (its image a private copy), or None when not stored."""
        if not self.available or not 0 <= position < self.slots:
            return None
        with self._lock:
            ready = self._state[position] == _READY
        if not ready:
            return None
        fields = json.loads(bytes(self._fields[position]).rstrip(b"\0"))
        fields["findings"] = np.asarray(fields["findings"], np.float32)
        return {"image": self._images[position].copy(), "masks": {}, **fields}

    def put(self, position: int, sample: dict) -> bool:
        """Store a prepared eye at ``position``; False (nothing stored) when the store cannot keep it:
        not reachable here, out of its slots, an image not ``side×side×3`` uint8, masks, fields
        that are not plain values or too long."""
        if not self.available or not 0 <= position < self.slots:
            return False
        image = np.asarray(sample["image"])
        if image.shape != (self.side, self.side, 3) or image.dtype != np.uint8 or sample.get("masks"):
            return False
        with self._lock:
            if self._state[position] == _READY:  # another worker stored it first
                return True
        fields = {k: v for k, v in sample.items() if k not in ("image", "masks")}
        try:
            encoded = json.dumps({**fields, "findings": np.asarray(fields["findings"], np.float64).tolist()},
                                 allow_nan=True, default=_plain).encode()
        except (TypeError, ValueError, KeyError):
            return False
        if len(encoded) > FIELD_BYTES or not _round_trips(fields, encoded):
            return False
        # two workers may write the same eye at once, and one may rewrite an eye another has just
        # published: every byte goes from its value to the same value, never through another one
        self._images[position] = image
        self._fields[position] = np.frombuffer(encoded.ljust(FIELD_BYTES, b"\0"), np.uint8)
        with self._lock:  # published after its bytes: the lock orders the writes for every reader
            self._state[position] = _READY
        return True

    def __getstate__(self) -> dict[str, Any]:
        # a process started afresh gets the store's shape, not its memory
        return {"slots": self.slots, "side": self.side, "image_bytes": self.image_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._memory = None


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python number JSON writes."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not a plain value: {type(value).__name__}")


def _round_trips(fields: dict, encoded: bytes) -> bool:
    """Whether ``fields`` come back from their JSON with the same values (numbers by value, NaN
    equal to NaN; findings as float32)."""
    decoded = json.loads(encoded)
    decoded["findings"] = np.asarray(decoded["findings"], np.float32).tolist()
    original = {**fields, "findings": np.asarray(fields["findings"], np.float32).tolist()}
    return _same(original, decoded)


def _same(a: Any, b: Any) -> bool:
    numbers = (int, float, np.integer, np.floating)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, (bool, np.bool_)):
        return float(a) == float(b) or (math.isnan(float(a)) and math.isnan(float(b)))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b
