"""A synthetic review session: phantom eyes with made-up explanations, to try the review page
without a trained model, and to test the server, the export and the benchmarks on sessions of any
size in seconds. Nothing in it comes from a model; its title says so on every page.

The "Grad-CAM" heatmap is the eye's blurred disc plus the masks of its findings; the
"adversarial" edits darken the cup (toward normal) or brighten and widen it (toward glaucoma);
probabilities and finding probabilities follow the phantom's truth with seeded noise.

Example:
    >>> import tempfile
    >>> from xmed.review.session import load_session
    >>> folder = synthetic_session(tempfile.mkdtemp(), n_cases=2, size=64)
    >>> session = load_session(folder)
    >>> [c["id"] for c in session["cases"]], sorted(session["cases"][0]["panels"])
    (['case-001', 'case-002'], ['adversarial', 'gradcam'])
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np

from xmed.decision import decision
from xmed.findings import FINDING_NAMES, FINDINGS, VCDR
from xmed.review.session import Edit, write_case, write_session

METHODS = ({"name": "gradcam", "kind": "saliency", "title": "Grad-CAM"},
           {"name": "adversarial", "kind": "counterfactual", "title": "Adversarial explanation"})
THRESHOLD = 0.5


def synthetic_session(folder: str | os.PathLike, n_cases: int = 3, mode: str = "blinded", bottleneck: bool = True,
                      seed: int = 0, size: int = 256) -> Path:
    """Write a session of ``n_cases`` phantom eyes (``size`` px) into ``folder``; returns it."""
    from xmed.data import render_phantom

    rng = np.random.default_rng(seed)
    weights = rng.normal(0.8, 0.3, len(FINDINGS) + 1).round(4)
    bias = -3.0
    cases, key = [], {}
    for index in range(n_cases):
        eye = render_phantom(seed=seed * 100_003 + index, size=size)
        case_id = f"case-{index + 1:03d}"
        key[case_id] = f"phantom seed {eye.seed}"
        present = [eye.findings[code] == 1 for code in FINDINGS]
        finding_p = np.clip(np.where(present, 0.8, 0.15) + rng.normal(0, 0.08, len(FINDINGS)), 0.01, 0.99).round(4)
        concepts = [*finding_p.tolist(), round(float(eye.vcdr), 4)]
        terms = weights * np.array(concepts)
        logit = float(bias + terms.sum())
        probability = round(1 / (1 + math.exp(-logit)), 4)
        findings = [{"code": code, "name": FINDING_NAMES[code].short, "probability": float(finding_p[j]),
                     "contribution": round(float(terms[j]), 4)} for j, code in enumerate(FINDINGS)]
        case = {"id": case_id, "side": {"OD": "right", "OS": "left"}.get(eye.eye), "probability": probability,
                "decision": decision(probability, THRESHOLD), "findings": findings, "vcdr": concepts[-1],
                "vcdr_contribution": round(float(terms[-1]), 4), "bias": bias, "unexplained": 0.0,
                "explained_share": 1.0, "contributions_exact": True, "quality": [],
                "sentence": f"Synthetic case: probability of glaucoma {probability:.2f} "
                            f"(threshold {THRESHOLD:.2f}); no model made it.",
                "concepts": concepts if bottleneck else None,
                "truth": {"label": int(eye.label), "findings": [c for c, p in zip(FINDINGS, present) if p]}}
        evidence = eye.masks["disc"].astype(np.float32)
        for code in FINDINGS:
            if code in eye.masks and eye.findings[code] == 1:
                evidence = np.maximum(evidence, eye.masks[code].astype(np.float32))
        heatmap = cv2.GaussianBlur(evidence, (0, 0), sigmaX=size / 40)
        edits = {"adversarial": {
            "toward_normal": _cup_edit(eye.image, eye.masks["cup"], -40, probability, 0.05, bool(index % 3 != 2)),
            "toward_glaucoma": _cup_edit(eye.image, eye.masks["cup"], +40, probability, 0.95, True)}}
        automatic = {"gradcam": {"energy_in_truth": round(float((heatmap * evidence).sum() / max(heatmap.sum(), 1e-9)), 4)},
                     "adversarial": {"validity": 1.0}}
        cases.append(write_case(folder, case, eye.image, {"gradcam": heatmap}, edits, automatic, eye.masks["fov"]))
    head = ({"concepts": [*FINDINGS, VCDR], "weights": weights.tolist(), "bias": bias} if bottleneck else None)
    return write_session(folder, title="Synthetic session (phantom eyes, made-up explanations)", mode=mode,
                         seed=seed, threshold=THRESHOLD, model={"name": "synthetic", "mode": "concept_bottleneck"
                                                                 if bottleneck else "multitask"},
                         methods=METHODS, cases=cases, bottleneck=head, key=key)


def _cup_edit(photo: np.ndarray, cup: np.ndarray, brightness: int, probability: float, goal: float,
              reached: bool) -> Edit:
    """The photograph with its cup (widened when brightening) made darker or brighter."""
    region = cv2.dilate(cup.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0 if brightness > 0 else cup
    edited = photo.astype(np.int16)
    edited[region] += brightness
    final = goal if reached else (probability + goal) / 2
    return Edit(image=np.clip(edited, 0, 255).astype(np.uint8), goal=goal, probability_from=probability,
                probability_to=round(final, 4), reached=reached, steps=12)
