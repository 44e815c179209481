"""The finding vocabulary: one source of truth for every data set, head and explainer.

The ten glaucomatous features graded in the JustRAIGS challenge, in a fixed order, plus the
continuous vertical cup-to-disc ratio.

Example:
    >>> from xmed.findings import FINDINGS, finding_index
    >>> FINDINGS[finding_index("DH")]
    'DH'
"""

from __future__ import annotations

FINDINGS: tuple[str, ...] = (
    "ANRS", "ANRI", "RNFLDS", "RNFLDI", "BCLVS", "BCLVI", "NVT", "DH", "LD", "LC",
)

FINDING_NAMES: dict[str, str] = {
    "ANRS": "appearance of the neuroretinal rim superiorly",
    "ANRI": "appearance of the neuroretinal rim inferiorly",
    "RNFLDS": "retinal nerve fibre layer defect superiorly",
    "RNFLDI": "retinal nerve fibre layer defect inferiorly",
    "BCLVS": "baring of the circumlinear vessel superiorly",
    "BCLVI": "baring of the circumlinear vessel inferiorly",
    "NVT": "nasalisation of the vessel trunk",
    "DH": "disc haemorrhage",
    "LD": "laminar dots",
    "LC": "large cup",
}

VCDR = "vCDR"

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
