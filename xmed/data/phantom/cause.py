"""The generative rule of the phantom: disease first, then findings and vCDR, then the oracle.

Glaucoma is drawn first (``prevalence``). A glaucomatous eye gets a severity ``s ~ U(0, 1)``;
each finding is then drawn independently given (glaucoma, severity), and the vCDR from a
truncated normal whose mean grows with severity. Healthy eyes draw findings at low background
rates and the vCDR from a mixture whose second component is the large *physiological* cup
(placed in a large disc by the renderer: disc size depends on the vCDR only, never on the
label, so it carries no information the oracle lacks). ``LC`` (large cup) is not drawn: it is
``vCDR >= 0.7``.

Because everything the image shows about the label passes through (findings, vCDR), the
oracle ``P(glaucoma | findings, vCDR)`` computed here by Bayes' rule is the best any model can
do; the overlap of the two classes keeps its AUROC well below 1.

Example:
    >>> import numpy as np
    >>> cause = draw_cause(np.random.default_rng(0), prevalence=0.3)
    >>> 0.0 <= cause.oracle <= 1.0
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from xmed.findings import FINDINGS

LARGE_CUP_VCDR = 0.7

# Finding probabilities: healthy rate, and glaucoma rate at severity 0 and 1 (linear between).
# LC is derived from the vCDR, so it has no entry.
FINDING_RATES: dict[str, tuple[float, float, float]] = {
    #          healthy  glaucoma@s=0  glaucoma@s=1
    "ANRS":   (0.04, 0.10, 0.70),
    "ANRI":   (0.05, 0.15, 0.80),
    "RNFLDS": (0.03, 0.08, 0.55),
    "RNFLDI": (0.04, 0.10, 0.65),
    "BCLVS":  (0.05, 0.08, 0.45),
    "BCLVI":  (0.06, 0.08, 0.50),
    "NVT":    (0.08, 0.12, 0.55),
    "DH":     (0.01, 0.04, 0.22),
    "LD":     (0.08, 0.12, 0.55),
}
DRAWN_FINDINGS = tuple(FINDING_RATES)

# vCDR: truncated normals on [VCDR_LOW, VCDR_HIGH].
VCDR_LOW, VCDR_HIGH = 0.15, 0.92
HEALTHY_VCDR = ((0.75, 0.38, 0.08), (0.25, 0.62, 0.07))   # (weight, mean, sd) mixture
GLAUCOMA_VCDR_MEAN = (0.52, 0.28)                          # mean = a + b * severity
GLAUCOMA_VCDR_SD = 0.07

_QUADRATURE_NODES = 256


@dataclass(frozen=True)
class Cause:
    """The drawn cause of one eye: label, severity (NaN when healthy), findings, vCDR, oracle."""

    label: int
    severity: float
    findings: dict[str, int]
    vcdr: float
    oracle: float


def _truncnorm_pdf(x, mean, sd):
    """Density of N(mean, sd) truncated to [VCDR_LOW, VCDR_HIGH] (vectorised over mean)."""
    z = (np.asarray(x) - mean) / sd
    mass = 0.5 * (_erf((VCDR_HIGH - mean) / (sd * math.sqrt(2))) - _erf((VCDR_LOW - mean) / (sd * math.sqrt(2))))
    return np.exp(-0.5 * z * z) / (sd * math.sqrt(2 * math.pi) * mass)


_erf = np.vectorize(math.erf, otypes=[float])


def _truncnorm_draw(rng: np.random.Generator, mean: float, sd: float) -> float:
    while True:  # rejection: the truncated mass is large, so this loops ~once
        x = rng.normal(mean, sd)
        if VCDR_LOW <= x <= VCDR_HIGH:
            return float(x)


def _glaucoma_rate(code: str, severity):
    _, low, high = FINDING_RATES[code]
    return low + (high - low) * severity


def draw_cause(rng: np.random.Generator, prevalence: float) -> Cause:
    """Draw label, severity, findings and vCDR of one eye, and its oracle probability."""
    label = int(rng.random() < prevalence)
    severity = float(rng.random()) if label else float("nan")
    findings = {}
    for code in DRAWN_FINDINGS:
        p = _glaucoma_rate(code, severity) if label else FINDING_RATES[code][0]
        findings[code] = int(rng.random() < p)
    if label:
        vcdr = _truncnorm_draw(rng, GLAUCOMA_VCDR_MEAN[0] + GLAUCOMA_VCDR_MEAN[1] * severity, GLAUCOMA_VCDR_SD)
    else:
        weights = [w for w, _, _ in HEALTHY_VCDR]
        _, mean, sd = HEALTHY_VCDR[int(rng.choice(len(HEALTHY_VCDR), p=weights))]
        vcdr = _truncnorm_draw(rng, mean, sd)
    findings["LC"] = int(vcdr >= LARGE_CUP_VCDR)
    ordered = {code: findings[code] for code in FINDINGS}
    return Cause(label, severity, ordered, vcdr, oracle_probability(ordered, vcdr, prevalence))


def oracle_probability(findings: dict[str, int], vcdr: float, prevalence: float) -> float:
    """P(glaucoma | findings, vCDR) under the generative rule (Bayes' rule, exact up to
    a 256-node midpoint quadrature over the severity).

    Example:
        >>> healthy = {c: 0 for c in FINDINGS}
        >>> oracle_probability(healthy, 0.3, 0.3) < 0.05
        True
    """
    # healthy likelihood
    like0 = _healthy_vcdr_pdf(vcdr)
    for code in DRAWN_FINDINGS:
        q = FINDING_RATES[code][0]
        like0 *= q if findings[code] else 1 - q
    # glaucoma likelihood, integrated over severity
    s = (np.arange(_QUADRATURE_NODES) + 0.5) / _QUADRATURE_NODES
    like1 = _truncnorm_pdf(vcdr, GLAUCOMA_VCDR_MEAN[0] + GLAUCOMA_VCDR_MEAN[1] * s, GLAUCOMA_VCDR_SD)
    for code in DRAWN_FINDINGS:
        p = _glaucoma_rate(code, s)
        like1 = like1 * (p if findings[code] else 1 - p)
    like1 = float(like1.mean())
    num = prevalence * like1
    den = num + (1 - prevalence) * like0
    return float(num / den) if den > 0 else float(prevalence)


def _healthy_vcdr_pdf(vcdr: float) -> float:
    return float(sum(w * _truncnorm_pdf(vcdr, m, sd) for w, m, sd in HEALTHY_VCDR))
