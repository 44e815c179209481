"""The finding-level rationale: why the model decided, in clinical words.

``xmed.rationale(model, images)`` returns one :class:`Rationale` per eye: the diagnosis
probability, each finding's probability and its contribution to the decision, the vCDR, what a
counterfactual edit toward the other class changed, per-finding heatmaps, and one short sentence.
An eye that fails the image-quality gate (:mod:`xmed.data.quality`), or whose features the model's
own feature check finds unlike its training eyes' (:mod:`xmed.models.feature_check`), carries its
flags, and its sentence starts by saying that the decision is not to be relied on.

Contributions are in logit units and add up to the diagnosis logit:
``logit = bias + Σ finding contributions + vCDR contribution + unexplained``.

* concept-bottleneck models: exact — the diagnosis is a linear function of the concepts
  (finding probabilities and vCDR), so each term is weight × concept and ``unexplained`` is 0;
* multitask models: the diagnosis head's weight vector is projected (least squares) onto the
  span of the finding heads' and the vCDR head's weight vectors; each concept's term is its
  coefficient × its head's logit (bias removed), and ``unexplained`` is the part of the
  diagnosis the findings' directions do not span — reported, never hidden.

Example:
    >>> import torch
    >>> from xmed.models import FundusClassifier
    >>> _ = torch.manual_seed(0)
    >>> model = FundusClassifier("test_resnet.r160_in1k", input_size=64).eval()
    >>> r = rationale(model, torch.rand(1, 3, 64, 64), counterfactual=None, heatmaps=False)[0]
    >>> total = r.bias + sum(f.contribution for f in r.findings) + r.vcdr_contribution + r.unexplained
    >>> abs(total - r.logit) < 1e-3    # each term is rounded to 4 decimals
    True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from xmed.errors import ConfigError, InputError
from xmed.explain.base import check_images
from xmed.findings import FINDING_NAMES, FINDINGS, VCDR

if TYPE_CHECKING:
    from xmed.data.quality import Quality

@dataclass
class FindingEvidence:
    """One finding of one eye: predicted probability and contribution to the diagnosis logit."""

    code: str
    name: str
    probability: float
    contribution: float


@dataclass
class Rationale:
    """Why the model decided for one eye (``to_dict()`` is JSON-serialisable; heatmaps are not
    part of it — they are tensors kept on the model's device). ``quality``: the image-quality
    flags of the eye (:mod:`xmed.data.quality`), with ``unfamiliar_features`` when the model's
    feature check flagged it, empty when it passed; ``feature_distance``: the Mahalanobis distance
    of its features from the training eyes' (None: the model carries no feature check)."""

    probability: float
    logit: float
    threshold: float
    decision: str
    vcdr: float
    findings: list[FindingEvidence]
    vcdr_contribution: float
    bias: float
    unexplained: float
    contributions_exact: bool
    counterfactual: dict[str, Any] | None
    sentence: str
    heatmaps: dict[str, Tensor] = field(default_factory=dict, repr=False)
    quality: list[str] = field(default_factory=list)
    feature_distance: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Strict JSON: a value that is not finite becomes None (``json.dumps(..., allow_nan=False)`` works)."""
        out = asdict(self)
        out.pop("heatmaps")
        return _finite_or_none(out)


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def concept_contributions(model: nn.Module, images: Tensor) -> dict[str, Tensor]:
    """Per-eye decomposition of the diagnosis logit (see the module docstring).

    Returns ``logit`` (B), ``bias`` (scalar), ``findings`` (B×10), ``vcdr`` (B),
    ``unexplained`` (B), ``finding_prob`` (B×10), ``vcdr_value`` (B), ``exact`` (bool) and
    ``feature_distance`` (B, or None for a model without a feature check).
    """
    if not all(hasattr(model, name) for name in ("glaucoma_head", "findings_head", "vcdr_head")):
        raise ConfigError("model", "a rationale needs a model with named heads (a FundusClassifier)")
    with torch.no_grad():
        features = model.forward_features(images)
        out = model.forward_head(features)
        logit = out["logits"].float()
        finding_prob = torch.sigmoid(out["finding_logits"].float())
        bias = model.glaucoma_head.bias.float()[0]
        distance = out.get("feature_distance")
        if model.mode == "concept_bottleneck":
            terms = model.bottleneck_terms(out["concepts"].float())
            return {"logit": logit, "bias": bias, "findings": terms[:, :len(FINDINGS)], "vcdr": terms[:, -1],
                    "unexplained": torch.zeros_like(logit), "finding_prob": finding_prob,
                    "vcdr_value": out["vcdr"].float(), "exact": True, "feature_distance": distance}
        pooled = model.backbone.forward_head(features, pre_logits=True).float()
        heads = torch.cat([model.findings_head.weight, model.vcdr_head.weight]).float()      # 11×C
        head_bias = torch.cat([model.findings_head.bias, model.vcdr_head.bias]).float()      # 11
        coefficients = torch.linalg.lstsq(heads.T, model.glaucoma_head.weight[0].float()[:, None]).solution[:, 0]
        concept_logits = pooled @ heads.T + head_bias                                        # B×11
        terms = coefficients * (concept_logits - head_bias)
        unexplained = logit - bias - terms.sum(dim=1)
        return {"logit": logit, "bias": bias, "findings": terms[:, :len(FINDINGS)], "vcdr": terms[:, -1],
                "unexplained": unexplained, "finding_prob": finding_prob, "vcdr_value": out["vcdr"].float(),
                "exact": False, "feature_distance": distance}


def rationale(model: nn.Module, images: Tensor, *, threshold: float | None = None,
              counterfactual: str | None = "adversarial", heatmaps: bool = True,
              counterfactual_options: dict[str, Any] | None = None, min_change: float = 0.15) -> list[Rationale]:
    """One :class:`Rationale` per eye of a B×3×H×W batch (already prepared for ``model``).

    Args:
        threshold: probability from which the decision reads "referable glaucoma"; None: the
            model's operating threshold (``model.threshold``, chosen on validation when it was
            trained), or 0.5 for a model that carries none.
        counterfactual: a method of :mod:`xmed.explain.counterfactual` that edits each eye toward
            the other decision and reports what changed; None skips it.
        heatmaps: Grad-CAM maps for the diagnosis and for every finding predicted present.
        min_change: smallest change of a finding probability (or of the vCDR, in its own units
            times 4) that the counterfactual summary mentions.
    """
    from xmed.data.quality import warn_flagged
    from xmed.models.feature_check import with_feature_flags

    images = check_images(images, model).to(next(model.parameters()).device)
    if threshold is None:
        threshold = getattr(model, "threshold", None)
        threshold = 0.5 if threshold is None else threshold
    parts = concept_contributions(model, images)
    probability = torch.sigmoid(parts["logit"])
    undecided = (~torch.isfinite(probability)).nonzero().flatten().tolist()
    if undecided:  # finite images, non-finite output: never read as a decision
        raise InputError("images", f"the model's output for image(s) {undecided[:10]} of the batch is not finite: "
                                   "no decision and no rationale can be stated")
    distance = parts["feature_distance"]
    qualities = with_feature_flags(_qualities(model, images), distance, getattr(model, "feature_check", None))
    warn_flagged(qualities)
    changes = _counterfactual_changes(model, images, probability, threshold, counterfactual,
                                      counterfactual_options or {}, min_change)
    maps = _heatmaps(model, images, parts["finding_prob"]) if heatmaps else [{} for _ in range(len(images))]
    out = []
    for i in range(images.shape[0]):
        findings = [FindingEvidence(code, FINDING_NAMES[code].full, _round(parts["finding_prob"][i, j]),
                                    _round(parts["findings"][i, j])) for j, code in enumerate(FINDINGS)]
        p = float(probability[i])
        decision = "referable glaucoma" if p >= threshold else "no referable glaucoma"
        r = Rationale(probability=round(p, 4), logit=_round(parts["logit"][i]), threshold=threshold,
                      decision=decision, vcdr=_round(parts["vcdr_value"][i]), findings=findings,
                      vcdr_contribution=_round(parts["vcdr"][i]), bias=_round(parts["bias"]),
                      unexplained=_round(parts["unexplained"][i]), contributions_exact=bool(parts["exact"]),
                      counterfactual=changes[i], sentence="", heatmaps=maps[i], quality=list(qualities[i].flags),
                      feature_distance=None if distance is None else _round(distance[i]))
        r.sentence = sentence(r)
        out.append(r)
    return out


def _qualities(model: nn.Module, images: Tensor) -> list[Quality]:
    """The image quality of each prepared image, judged with the model's data config (a model
    without one: not judged, no flags)."""
    from xmed.data.quality import Quality, assess_prepared

    data_config = getattr(model, "data_config", None)
    if data_config is None:
        return [Quality(judged=()) for _ in range(images.shape[0])]
    return assess_prepared(images, data_config)


def explained_share(r: Rationale) -> float:
    """The share of the decision's evidence (the diagnosis logit less its bias) that the findings
    and the vCDR account for, in absolute terms: 1.0 for a concept-bottleneck model (exact), less
    when part of the logit comes from image features no finding head reads.

    Example:
        >>> explained_share(Rationale(0.8, 1.4, 0.5, "referable glaucoma", 0.7, [FindingEvidence("LC", "", 0.9, 0.6)],
        ...                           0.2, 0.0, 0.6, False, None, ""))
        0.571...
    """
    named = sum(abs(f.contribution) for f in r.findings) + abs(r.vcdr_contribution)
    total = named + abs(r.unexplained)
    return 1.0 if total == 0 else named / total


def sentence(r: Rationale) -> str:
    """The decision in plain clinical language: the decision with the probability of glaucoma and
    the model's threshold, the main reasons (or that no single finding explains it), how much of
    the decision the findings leave unexplained, and what the counterfactual edit changed — each
    number named for what it is (after a warning when the image failed the image-quality gate or the
    model's feature check: :func:`reliance_warning`).

    Example:
        >>> f = [FindingEvidence("LC", "large cup", 0.9, 1.2), FindingEvidence("DH", "disc haemorrhage", 0.1, -0.1)]
        >>> r = Rationale(0.87, 1.9, 0.42, "referable glaucoma", 0.78, f, 0.9, -0.5, 0.0, True,
        ...               {"toward": "normal", "changes": [{"code": "vcdr", "from": 0.78, "to": 0.55}]}, "")
        >>> print(sentence(r))
        Referable glaucoma: probability of glaucoma 0.87 (referable from 0.42). Main reasons: a large cup (probability 0.90) and the vCDR of 0.78. An edit toward normal lowers the vCDR from 0.78 to 0.55.

    A finding drives the decision by being there or by being absent, and is named so; a share of
    the decision the findings do not account for is stated:

        >>> f = [FindingEvidence("LC", "large cup", 0.02, -1.4), FindingEvidence("DH", "disc haemorrhage", 0.1, -0.1)]
        >>> print(sentence(Rationale(0.04, -3.2, 0.5, "no referable glaucoma", 0.39, f, -0.3, -1.4, 1.2, False, None, "")))
        No referable glaucoma: probability of glaucoma 0.04 (referable from 0.50). Main reasons: no large cup (probability 0.02) and the vCDR of 0.39. 40% of the decision is not explained by the findings or the vCDR.

        >>> f = [FindingEvidence("LC", "large cup", 0.5, 0.01)]
        >>> print(sentence(Rationale(0.74, 1.0, 0.5, "referable glaucoma", 0.5, f, 0.02, 0.0, 0.97, False, None, "")))
        Referable glaucoma: probability of glaucoma 0.74 (referable from 0.50). No single finding explains it. 97% of the decision is not explained by the findings or the vCDR.

    An image that failed the quality gate is said so first:

        >>> r = Rationale(0.99, 4.6, 0.5, "referable glaucoma", 0.5, f, 0.0, 4.6, 0.0, True, None, "",
        ...               quality=["nearly_uniform"])
        >>> print(sentence(r))
        The image failed the quality check (a nearly uniform image): do not rely on this decision. Referable glaucoma: probability of glaucoma 0.99 (referable from 0.50). No single finding explains it.
    """
    by_code = {f.code: f for f in r.findings}
    drivers = []
    for code in main_reasons(r):
        if code == VCDR:
            drivers.append(f"the vCDR of {r.vcdr:.2f}")
            continue
        f, name = by_code[code], FINDING_NAMES[code].short
        term = _with_article(name) if f.probability >= 0.5 else f"no {name}"
        drivers.append(f"{term} (probability {f.probability:.2f})")
    parts = [f"{r.decision[0].upper()}{r.decision[1:]}: probability of glaucoma {r.probability:.2f} "
             f"(referable from {r.threshold:.2f})."]
    parts.append(f"Main reasons: {' and '.join(drivers)}." if drivers else "No single finding explains it.")
    unexplained = 1.0 - explained_share(r)
    if unexplained >= 0.005:
        parts.append(f"{unexplained:.0%} of the decision is not explained by the findings or the vCDR.")
    if r.counterfactual and r.counterfactual.get("changes"):
        moves = []
        for change in r.counterfactual["changes"][:2]:
            verb = "lowers" if change["to"] < change["from"] else "raises"
            label = ("the vCDR" if change["code"] == VCDR
                     else f"the probability of {_with_article(FINDING_NAMES[change['code']].short)}")
            moves.append(f"{verb} {label} from {change['from']:.2f} to {change['to']:.2f}")
        parts.append(f"An edit toward {r.counterfactual['toward']} " + " and ".join(moves) + ".")
    warning = reliance_warning(r.quality)
    return " ".join([warning, *parts] if warning else parts)


def reliance_warning(flags: list[str]) -> str:
    """The sentence that opens the rationale of an eye with quality ``flags``: the decision is not
    to be relied on, because the model was not trained on images like it (``unfamiliar_features``)
    and/or the image failed the quality check (the image's own flags, in words); empty when none.

    Example:
        >>> reliance_warning(["unfamiliar_features"])
        'The model was not trained on images like this one: do not rely on this decision.'
        >>> reliance_warning(["unfamiliar_features", "nearly_uniform"])
        'The model was not trained on images like this one, and the image failed the quality check (a nearly uniform image): do not rely on this decision.'
    """
    from xmed.data.quality import Quality
    from xmed.models.feature_check import UNFAMILIAR_FEATURES

    image_flags = tuple(flag for flag in flags if flag != UNFAMILIAR_FEATURES)
    reasons = ["the model was not trained on images like this one"] if UNFAMILIAR_FEATURES in flags else []
    if image_flags:
        reasons.append(f"the image failed the quality check ({Quality(image_flags).describe()})")
    if not reasons:
        return ""
    text = ", and ".join(reasons)
    return f"{text[0].upper()}{text[1:]}: do not rely on this decision."


def main_reasons(r: Rationale, most: int = 2, min_contribution: float = 0.05) -> list[str]:
    """The codes (finding codes, ``"vcdr"``) of the terms that drive the decision most: the
    ``most`` largest contributions toward the decision taken, each at least ``min_contribution``
    of the logit. A finding is a reason by being there (probability ≥ 0.5) or by being absent.

    Example:
        >>> f = [FindingEvidence("LC", "large cup", 0.9, 1.2), FindingEvidence("DH", "disc haemorrhage", 0.1, -0.1)]
        >>> main_reasons(Rationale(0.87, 1.9, 0.42, "referable glaucoma", 0.78, f, 0.9, -0.5, 0.0, True, None, ""))
        ['LC', 'vcdr']
    """
    toward_glaucoma = r.decision == "referable glaucoma"
    terms = [(f.contribution, f.code) for f in r.findings] + [(r.vcdr_contribution, VCDR)]
    ranked = sorted(terms, key=lambda t: -t[0] if toward_glaucoma else t[0])
    return [code for value, code in ranked[:most] if (value > 0) == toward_glaucoma and abs(value) >= min_contribution]


def _with_article(phrase: str) -> str:
    if phrase.startswith("the ") or phrase.endswith("dots"):
        return phrase
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _counterfactual_changes(model, images, probability, threshold, method, options, min_change):
    if method is None:
        return [None] * images.shape[0]
    from xmed.explain.counterfactual import counterfactual

    out: list[dict[str, Any] | None] = [None] * images.shape[0]
    positive = probability >= threshold
    for direction, chosen in (("decrease", positive), ("increase", ~positive)):
        index = torch.nonzero(chosen).flatten()
        if index.numel() == 0:
            continue
        cf = counterfactual(model, images[index], method=method, target="glaucoma", direction=direction, **options)
        for k, i in enumerate(index.tolist()):
            first, last = 0, -1
            changes = []
            if cf.vcdr is not None:
                a, b = float(cf.vcdr[first, k]), float(cf.vcdr[last, k])
                if abs(b - a) * 4 >= min_change:
                    changes.append({"code": VCDR, "from": round(a, 3), "to": round(b, 3)})
            if cf.findings is not None:
                for j, code in enumerate(FINDINGS):
                    a, b = float(cf.findings[first, k, j]), float(cf.findings[last, k, j])
                    if abs(b - a) >= min_change:
                        changes.append({"code": code, "from": round(a, 3), "to": round(b, 3)})
            changes.sort(key=lambda c: -abs(c["to"] - c["from"]) * (4 if c["code"] == VCDR else 1))
            out[i] = {"method": method, "toward": "normal" if direction == "decrease" else "glaucoma",
                      "probability": [round(float(cf.probability[first, k]), 4), round(float(cf.probability[last, k]), 4)],
                      "reached": bool(cf.reached[k]), "steps": int(cf.steps[k]), "changes": changes}
    return out


def _heatmaps(model, images, finding_prob) -> list[dict[str, Tensor]]:
    from xmed.explain.saliency.cam import GradCAM

    gradcam = GradCAM(model)
    maps: list[dict[str, Tensor]] = [{} for _ in range(images.shape[0])]
    glaucoma = gradcam(images, "glaucoma").maps
    for i in range(images.shape[0]):
        maps[i]["glaucoma"] = glaucoma[i, 0]
    for j, code in enumerate(FINDINGS):
        present = torch.nonzero(finding_prob[:, j] >= 0.5).flatten()
        if present.numel():
            finding_maps = gradcam(images[present], code).maps
            for k, i in enumerate(present.tolist()):
                maps[i][code] = finding_maps[k, 0]
    return maps


def _round(value) -> float:
    value = float(value.detach()) if isinstance(value, Tensor) else float(value)
    return value if math.isnan(value) else round(value, 4)
