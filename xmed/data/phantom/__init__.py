"""The procedural fundus phantom: fundus photographs rendered from a known cause.

Every eye is drawn disease-first (see :mod:`xmed.data.phantom.cause`), then rendered with a
pixel mask per finding (:mod:`xmed.data.phantom.render`). The phantom is the default data of
every command and the measuring stick of every explainer, because its truth is known.

Example:
    >>> from xmed.data import render_phantom
    >>> eye = render_phantom(seed=3, size=256)
    >>> eye.image.shape, eye.image.dtype.name, {"disc", "cup", "fov"} <= set(eye.masks)
    ((256, 256, 3), 'uint8', True)
    >>> from xmed.data.datasets.base import vcdr_from_masks
    >>> abs(vcdr_from_masks(eye.masks["disc"], eye.masks["cup"]) - eye.vcdr) <= 0.05
    True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from xmed.data.phantom.cause import (
    LARGE_CUP_VCDR,
    VCDR_HIGH,
    VCDR_LOW,
    Cause,
    draw_cause,
    oracle_probability,
)
from xmed.data.phantom.render import render_eye
from xmed.errors import ConfigError


@dataclass(frozen=True)
class PhantomOptions:
    """Generation parameters (all recorded in a written data set's ``phantom.json``).

    Attributes:
        prevalence: P(glaucoma).
        shortcut: None draws no marker; a strength ``s`` in [0, 1] draws a bright marker with
            probability ``(1 + s) / 2`` in glaucomatous and ``(1 - s) / 2`` in healthy eyes
            (``s = 0``: present at random, independent of the label).
        camera: camera variation (exposure, colour cast, gamma, blur, noise, JPEG).
        distractors: label-free distractors (drusen, dust, uneven illumination, atrophy).
        p_od: probability that an eye is a right eye.
    """

    prevalence: float = 0.3
    shortcut: float | None = None
    camera: bool = True
    distractors: bool = True
    p_od: float = 0.5

    def __post_init__(self):
        if not 0.0 < self.prevalence < 1.0:
            raise ConfigError("prevalence", f"must lie in (0, 1), got {self.prevalence}")
        if self.shortcut is not None and not 0.0 <= self.shortcut <= 1.0:
            raise ConfigError("shortcut", f"must be None or lie in [0, 1], got {self.shortcut}")
        if not 0.0 <= self.p_od <= 1.0:
            raise ConfigError("p_od", f"must lie in [0, 1], got {self.p_od}")

    @classmethod
    def from_kwargs(cls, **options) -> "PhantomOptions":
        known = {f.name for f in fields(cls)}
        for key in options:
            if key not in known:
                raise ConfigError(key, f"unknown phantom option; known: {', '.join(sorted(known))}")
        return cls(**options)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class PhantomSample:
    """One rendered eye: the image, its cause and a boolean pixel mask per structure.

    ``masks`` holds ``disc``, ``cup``, ``fov``, one mask per finding code that is present, and
    ``shortcut`` when the marker was drawn. ``oracle`` is the true P(glaucoma | findings, vCDR).
    """

    image: np.ndarray
    label: int
    findings: dict[str, int]
    vcdr: float
    masks: dict[str, np.ndarray]
    eye: str
    oracle: float
    seed: int
    severity: float
    shortcut: bool


def _min_size():
    return 32


def draw_phantom_cause(seed: int, **options) -> tuple[Cause, str, bool]:
    """The label-side draws of :func:`render_phantom` (cause, eye, marker) without rendering."""
    opts = PhantomOptions.from_kwargs(**options)
    rng = np.random.default_rng([seed, 0])
    cause = draw_cause(rng, opts.prevalence)
    eye = "OD" if rng.random() < opts.p_od else "OS"
    marker = False
    if opts.shortcut is not None:
        p = (1 + opts.shortcut) / 2 if cause.label else (1 - opts.shortcut) / 2
        marker = bool(np.random.default_rng([seed, 3]).random() < p)
    return cause, eye, marker


def render_phantom(seed: int, size: int = 512, *, cup_vcdr: float | None = None, **options) -> PhantomSample:
    """Render one phantom eye, deterministically from ``seed``.

    Args:
        seed: any non-negative int; the same seed gives the same eye (labels at every size,
            pixels at the same size).
        size: image side in pixels (>= 32).
        cup_vcdr: the same eye with its cup drawn at this vCDR (in [0.15, 0.92], the range the
            phantom draws), every other draw as it was, the disc included: the eye as it would
            look with a smaller or larger cup. Its ``vcdr``, ``LC`` and ``oracle`` follow the new
            cup; its label and severity stay the drawn ones. None: the cup as drawn.
        **options: fields of :class:`PhantomOptions` (``prevalence``, ``shortcut``, ``camera``,
            ``distractors``, ``p_od``); an unknown option raises :class:`ConfigError`.

    Example:
        >>> eye = render_phantom(seed=1, size=128, prevalence=0.5)
        >>> set(eye.findings) == set(__import__("xmed").FINDINGS)
        True
        >>> smaller = render_phantom(seed=1, size=128, prevalence=0.5, cup_vcdr=eye.vcdr - 0.1)
        >>> smaller.masks["cup"].sum() < eye.masks["cup"].sum(), (smaller.masks["disc"] == eye.masks["disc"]).all()
        (np.True_, np.True_)
    """
    if int(size) < _min_size():
        raise ConfigError("size", f"must be at least {_min_size()} pixels, got {size}")
    if int(seed) < 0:
        raise ConfigError("seed", f"must be non-negative, got {seed}")
    if cup_vcdr is not None and not VCDR_LOW <= cup_vcdr <= VCDR_HIGH:
        raise ConfigError("cup_vcdr", f"must lie in [{VCDR_LOW}, {VCDR_HIGH}], got {cup_vcdr!r}")
    opts = PhantomOptions.from_kwargs(**options)
    cause, eye, marker = draw_phantom_cause(seed, **options)
    rendered = render_eye(cause, eye, int(size), int(seed), shortcut=marker, camera=opts.camera,
                          distractors=opts.distractors, cup_vcdr=cup_vcdr)
    if cup_vcdr is not None:  # the disc was sized by the drawn vCDR above; the cup is the new one
        findings = {**cause.findings, "LC": int(cup_vcdr >= LARGE_CUP_VCDR)}
        cause = replace(cause, findings=findings, vcdr=float(cup_vcdr),
                        oracle=oracle_probability(findings, float(cup_vcdr), opts.prevalence))
    return PhantomSample(
        image=rendered.image, label=cause.label, findings=dict(cause.findings), vcdr=cause.vcdr,
        masks=rendered.masks, eye=eye, oracle=cause.oracle, seed=int(seed),
        severity=cause.severity, shortcut=marker,
    )


__all__ = ["PhantomOptions", "PhantomSample", "draw_phantom_cause", "oracle_probability",
           "render_phantom"]
