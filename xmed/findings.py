"""The finding vocabulary: one source of truth for every data set, head and explainer.

The ten glaucomatous features graded in the JustRAIGS challenge, in a fixed order, with their
names; the continuous vertical cup-to-disc ratio; the targets a model with named heads answers.

Example:
    >>> from xmed.findings import FINDINGS, finding_index
    >>> FINDINGS[finding_index("DH")]
    'DH'
"""

from __future__ import annotations

from typing import NamedTuple

from xmed.errors import ConfigError


class FindingName(NamedTuple):
    """How a finding is called: in full (as graded in JustRAIGS) and in a few words (in a sentence)."""

    full: str
    short: str


#: Finding code -> its names, in the fixed order of :data:`FINDINGS`.
FINDING_NAMES: dict[str, FindingName] = {
    "ANRS": FindingName("appearance of the neuroretinal rim superiorly", "superior rim thinning"),
    "ANRI": FindingName("appearance of the neuroretinal rim inferiorly", "inferior rim thinning"),
    "RNFLDS": FindingName("retinal nerve fibre layer defect superiorly", "superior RNFL defect"),
    "RNFLDI": FindingName("retinal nerve fibre layer defect inferiorly", "inferior RNFL defect"),
    "BCLVS": FindingName("baring of the circumlinear vessel superiorly", "superior bared circumlinear vessel"),
    "BCLVI": FindingName("baring of the circumlinear vessel inferiorly", "inferior bared circumlinear vessel"),
    "NVT": FindingName("nasalisation of the vessel trunk", "nasalised vessel trunk"),
    "DH": FindingName("disc haemorrhage", "disc haemorrhage"),
    "LD": FindingName("laminar dots", "laminar dots"),
    "LC": FindingName("large cup", "large cup"),
}

FINDINGS: tuple[str, ...] = tuple(FINDING_NAMES)

#: The vertical cup-to-disc ratio's name as a target, an intervention key and a dict key.
VCDR = "vcdr"
#: The diagnosis as a target.
DIAGNOSIS = "glaucoma"
#: What a model with named heads can be asked about: the diagnosis, each finding, the vCDR.
TARGETS: tuple[str, ...] = (DIAGNOSIS, *FINDINGS, VCDR)


def canonical_target(name: str) -> str:
    """The canonical name of a target: ``"vcdr"`` for the vCDR in any case (``"vCDR"``), the
    diagnosis and the finding codes as they are.

    Raises:
        ConfigError: (a ``ValueError``) for an unknown name, listing the known targets.

    Example:
        >>> canonical_target("vCDR"), canonical_target("DH")
        ('vcdr', 'DH')
    """
    if isinstance(name, str) and name.lower() == VCDR:
        return VCDR
    if name not in TARGETS:
        raise ConfigError("target", f"unknown target {name!r}; use one of {', '.join(TARGETS)} "
                                    f"(the vCDR in any case)")
    return name


# Superior/inferior pairs: a vertical flip of the image swaps each pair.
VERTICAL_PAIRS: tuple[tuple[str, str], ...] = (
    ("ANRS", "ANRI"), ("RNFLDS", "RNFLDI"), ("BCLVS", "BCLVI"),
)


def finding_index(code: str) -> int:
    """Position of a finding code in :data:`FINDINGS`; raises ``KeyError`` naming the code."""
    try:
        return FINDINGS.index(code)
    except ValueError:
        raise KeyError(f"unknown finding code {code!r}; known: {', '.join(FINDINGS)}") from None


def vertical_flip_partner(code: str) -> str:
    """The finding a vertical flip turns ``code`` into (itself when it has no partner).

    Example:
        >>> vertical_flip_partner("ANRS"), vertical_flip_partner("DH")
        ('ANRI', 'DH')
    """
    for a, b in VERTICAL_PAIRS:
        if code == a:
            return b
        if code == b:
            return a
    return code


def vertical_flip_permutation() -> list[int]:
    """Index permutation ``p`` such that ``findings[p]`` is the vector after a vertical flip."""
    return [finding_index(vertical_flip_partner(code)) for code in FINDINGS]
