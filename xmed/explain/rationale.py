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
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from xmed.data.quality import Quality, assess_prepared, warn_flagged
from xmed.decision import REFERABLE, decision, operating_threshold
from xmed.errors import ConfigError, InputError
from xmed.explain.base import ModelMethod, check_images, option_value, register_method
from xmed.explain.counterfactual import counterfactual, edit_changes, get_counterfactual
from xmed.explain.saliency.cam import GradCAM
from xmed.findings import FINDING_NAMES, FINDINGS, VCDR
from xmed.models.feature_check import UNFAMILIAR_FEATURES, with_feature_flags


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
        """Strict JSON: a value that is not finite becomes None (``json.dumps(..., allow_nan=False)`` works);
        ``contribution_unit`` names the unit of the contributions (:data:`CONTRIBUTION_UNIT`)."""
        out = asdict(self)
        out.pop("heatmaps")
        out["contribution_unit"] = CONTRIBUTION_UNIT
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
    images = check_images(images, model).to(next(model.parameters()).device)
    threshold = operating_threshold(model, threshold)
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
        findings = [FindingEvidence(code, FINDING_NAMES[code].short, _round(parts["finding_prob"][i, j]),
                                    _round(parts["findings"][i, j])) for j, code in enumerate(FINDINGS)]
        p = float(probability[i])
        r = Rationale(probability=round(p, 4), logit=_round(parts["logit"][i]), threshold=threshold,
                      decision=decision(p, threshold), vcdr=_round(parts["vcdr_value"][i]), findings=findings,
                      vcdr_contribution=_round(parts["vcdr"][i]), bias=_round(parts["bias"]),
                      unexplained=_round(parts["unexplained"][i]), contributions_exact=bool(parts["exact"]),
                      counterfactual=changes[i], sentence="", heatmaps=maps[i], quality=list(qualities[i].flags),
                      feature_distance=None if distance is None else _round(distance[i]))
        r.sentence = sentence(r)
        out.append(r)
    return out


@register_method
class RationaleExplainer(ModelMethod):
    """The finding-level rationale as a registered explanation method (``METHODS["rationale"]``,
    ``xmed-explain explainer=rationale``): built once for a model with the options of
    :func:`rationale`, called on batches of eyes prepared for it.

    Example:
        >>> from xmed.models import FundusClassifier
        >>> model = FundusClassifier("test_resnet.r160_in1k", input_size=64, threshold=0.3).eval()
        >>> explainer = RationaleExplainer(model, counterfactual=None, heatmaps=False)
        >>> [r.threshold for r in explainer(torch.rand(2, 3, 64, 64))], RationaleExplainer.title
        ([0.3, 0.3], 'Finding-level rationale')
        >>> RationaleExplainer(model, counterfactual="nope")
        Traceback (most recent call last):
        ...
        xmed.errors.ConfigError: config key 'counterfactual': unknown counterfactual method 'nope'; known: adversarial, latent_shift
    """

    name, title, kind = "rationale", "Finding-level rationale", "rationale"

    def __init__(self, model: nn.Module, *, threshold: float | None = None, counterfactual: str | None = "adversarial",
                 heatmaps: bool = True, counterfactual_options: dict[str, Any] | None = None, min_change: float = 0.15):
        super().__init__(model)
        if counterfactual is not None:
            try:
                get_counterfactual(counterfactual)
            except ConfigError as err:
                raise ConfigError("counterfactual", err.reason) from None
        self.options = {"threshold": threshold, "counterfactual": counterfactual, "heatmaps": heatmaps,
                        "counterfactual_options": counterfactual_options, "min_change": min_change}

    def __call__(self, images: Tensor) -> list[Rationale]:
        """One :class:`Rationale` per eye of a B×3×H×W batch (:func:`rationale`)."""
        return rationale(self.model, images, **self.options)

    @classmethod
    def recorded_frames(cls, options: Mapping[str, Any]) -> int:
        """The frames of its edit's path (none without one)."""
        method = option_value(cls, options, "counterfactual")
        if method is None:
            return 0
        return get_counterfactual(method).recorded_frames(options.get("counterfactual_options") or {})


def _qualities(model: nn.Module, images: Tensor) -> list[Quality]:
    """The image quality of each prepared image, judged with the model's data config (a model
    without one: not judged, no flags)."""
    data_config = getattr(model, "data_config", None)
    if data_config is None:
        return [Quality(judged=()) for _ in range(images.shape[0])]
    return assess_prepared(images, data_config)


#: the least share of the evidence for a decision (:func:`explained_share`) its reasons must account
#: for before any is named: below it the sentence says that no finding explains the decision, rather
#: than naming a small part of it as the reason
MIN_EXPLAINED_SHARE = 0.5
#: the unit of every contribution of a :class:`Rationale` (terms that add up to the diagnosis logit)
CONTRIBUTION_UNIT = "logit (log-odds of glaucoma)"


#: the smallest term, in logit units, named as a reason
MIN_CONTRIBUTION = 0.05


def reason_terms(r: Rationale) -> list[tuple[str, float]]:
    """The terms that can be named as reasons for the decision taken, as ``(code, evidence)`` with
    ``evidence`` > 0 in logit units toward that decision, largest first: the vCDR when it pushes
    toward the decision; for a referable decision, each finding **present** (probability ≥ 0.5)
    that pushes toward it; for no referable decision, each finding **absent** that pushes toward
    that. A finding absent is never a reason to refer, a finding present never a reason not to,
    and a term pushing the other way is never a reason.

    Example:
        >>> f = [FindingEvidence("LC", "large cup", 0.9, 1.2), FindingEvidence("RNFLDS", "superior RNFL defect", 0.1, 0.7)]
        >>> reason_terms(Rationale(0.87, 1.9, 0.42, "referable glaucoma", 0.78, f, 0.9, -0.5, 0.0, True, None, ""))
        [('LC', 1.2), ('vcdr', 0.9)]
    """
    sign = 1.0 if r.decision == REFERABLE else -1.0
    terms = [(f.code, sign * f.contribution) for f in r.findings if (f.probability >= 0.5) == (sign > 0)]
    terms.append((VCDR, sign * r.vcdr_contribution))
    return sorted(((code, value) for code, value in terms if value > 0), key=lambda t: -t[1])


def explained_share(r: Rationale) -> float:
    """The share of the evidence for the decision taken that its possible reasons
    (:func:`reason_terms`) account for: of every term of the logit that pushes toward the decision
    (findings, vCDR and the part no finding head spans; the bias is the model's starting point, not
    evidence), the part of the reason terms. 0 when nothing named pushes toward the decision — e.g.
    a referable decision whose findings all push the other way — so such a decision is never said
    to be explained.

    Example:
        >>> f = [FindingEvidence("LC", "large cup", 0.9, 0.6), FindingEvidence("DH", "disc haemorrhage", 0.1, -0.3)]
        >>> round(explained_share(Rationale(0.8, 1.4, 0.5, "referable glaucoma", 0.7, f, 0.2, 0.0, 0.6, False, None, "")), 3)
        0.571
        >>> f = [FindingEvidence("LC", "large cup", 0.9, -0.6)]
        >>> explained_share(Rationale(0.8, 1.4, 0.5, "referable glaucoma", 0.7, f, -0.2, 0.0, 2.2, False, None, ""))
        0.0
    """
    return _share(r, [value for _, value in reason_terms(r)])


def _share(r: Rationale, values: list[float]) -> float:
    """``values`` (evidence toward the decision, logit units) as a share of all the evidence toward it."""
    sign = 1.0 if r.decision == REFERABLE else -1.0
    every_term = [f.contribution for f in r.findings] + [r.vcdr_contribution, r.unexplained]
    toward = sum(max(0.0, sign * value) for value in every_term)
    return 0.0 if toward <= 0 else min(1.0, sum(values) / toward)


def finding_phrase(code: str, present: bool) -> str:
    """A finding as the rationale names it, everywhere (sentence, page, report): its short name with
    an article when present, "no …" when absent.

    Example:
        >>> finding_phrase("LC", True), finding_phrase("RNFLDS", False), finding_phrase("LD", True)
        ('a large cup', 'no superior RNFL defect', 'laminar dots')
    """
    name = FINDING_NAMES[code].short
    return _with_article(name) if present else f"no {name}"


def sentence(r: Rationale) -> str:
    """The decision in plain clinical language: the decision with the probability of glaucoma and
    the model's threshold; the main reasons (:func:`main_reasons`) with the share of the evidence
    for the decision they account for, or that no finding explains the decision when the possible
    reasons account for less than :data:`MIN_EXPLAINED_SHARE` of it; and what the counterfactual
    edit changed — each number named for what it is (after a warning when the image failed the
    image-quality gate or the model's feature check: :func:`reliance_warning`).

    Example:
        >>> f = [FindingEvidence("LC", "large cup", 0.9, 1.2), FindingEvidence("DH", "disc haemorrhage", 0.1, -0.1)]
        >>> r = Rationale(0.87, 1.9, 0.42, "referable glaucoma", 0.78, f, 0.9, -0.5, 0.0, True,
        ...               {"toward": "normal", "changes": [{"code": "vcdr", "from": 0.78, "to": 0.55}]}, "")
        >>> print(sentence(r))
        Referable glaucoma: probability of glaucoma 0.87 (referable from 0.42). Main reasons: a large cup (probability 0.90) and the vCDR of 0.78 (100% of the evidence for this decision). An edit toward normal lowers the vCDR from 0.78 to 0.55.

    No referable glaucoma is explained by the signs that are absent:

        >>> f = [FindingEvidence("LC", "large cup", 0.02, -1.4), FindingEvidence("DH", "disc haemorrhage", 0.1, -0.1)]
        >>> print(sentence(Rationale(0.04, -3.2, 0.5, "no referable glaucoma", 0.39, f, -0.3, -1.4, -0.4, False, None, "")))
        No referable glaucoma: probability of glaucoma 0.04 (referable from 0.50). Main reasons: no large cup (probability 0.02) and the vCDR of 0.39 (77% of the evidence for this decision).

    When the findings account for too little of the decision, none is named:

        >>> f = [FindingEvidence("LC", "large cup", 0.9, 0.3), FindingEvidence("RNFLDS", "superior RNFL defect", 0.1, 0.5)]
        >>> print(sentence(Rationale(0.74, 1.0, 0.5, "referable glaucoma", 0.5, f, 0.02, 0.0, 1.4, False, None, "")))
        Referable glaucoma: probability of glaucoma 0.74 (referable from 0.50). No finding explains this decision: the findings present and the vCDR account for 14% of the evidence for it (a reason is named from 50%).

    An image that failed the quality gate is said so first:

        >>> f = [FindingEvidence("LC", "large cup", 0.5, 0.01)]
        >>> r = Rationale(0.99, 4.6, 0.5, "referable glaucoma", 0.5, f, 0.0, 4.6, 0.0, True, None, "",
        ...               quality=["nearly_uniform"])
        >>> print(sentence(r))
        The image failed the quality check (a nearly uniform image): do not rely on this decision. Referable glaucoma: probability of glaucoma 0.99 (referable from 0.50). No finding explains this decision: none moves it by 0.05 logit or more.
    """
    by_code = {f.code: f for f in r.findings}
    parts = [f"{r.decision[0].upper()}{r.decision[1:]}: probability of glaucoma {r.probability:.2f} "
             f"(referable from {r.threshold:.2f})."]
    share = explained_share(r)
    reasons = dict(reason_terms(r))
    named = main_reasons(r)
    if named:
        phrases = [f"the vCDR of {r.vcdr:.2f}" if code == VCDR else
                   f"{finding_phrase(code, by_code[code].probability >= 0.5)} (probability {by_code[code].probability:.2f})"
                   for code in named]
        parts.append(f"Main reasons: {' and '.join(phrases)} "
                     f"({_share(r, [reasons[code] for code in named]):.0%} of the evidence for this decision).")
    elif share < MIN_EXPLAINED_SHARE:
        which = "the findings present" if r.decision == REFERABLE else "the findings absent"
        parts.append(f"No finding explains this decision: {which} and the vCDR account for {share:.0%} of the "
                     f"evidence for it (a reason is named from {MIN_EXPLAINED_SHARE:.0%}).")
    else:
        parts.append(f"No finding explains this decision: none moves it by {MIN_CONTRIBUTION:g} logit or more.")
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
    image_flags = tuple(flag for flag in flags if flag != UNFAMILIAR_FEATURES)
    reasons = ["the model was not trained on images like this one"] if UNFAMILIAR_FEATURES in flags else []
    if image_flags:
        reasons.append(f"the image failed the quality check ({Quality(image_flags).describe()})")
    if not reasons:
        return ""
    text = ", and ".join(reasons)
    return f"{text[0].upper()}{text[1:]}: do not rely on this decision."


def main_reasons(r: Rationale, most: int = 2, min_contribution: float | None = None) -> list[str]:
    """The codes (finding codes, ``"vcdr"``) the rationale names as the reasons for the decision:
    the ``most`` largest :func:`reason_terms`, each at least ``min_contribution`` logit (default
    :data:`MIN_CONTRIBUTION`) — none when together they account for less than
    :data:`MIN_EXPLAINED_SHARE` of the evidence for the decision (:func:`explained_share`).

    Example:
        >>> f = [FindingEvidence("LC", "large cup", 0.9, 1.2), FindingEvidence("DH", "disc haemorrhage", 0.1, -0.1)]
        >>> main_reasons(Rationale(0.87, 1.9, 0.42, "referable glaucoma", 0.78, f, 0.9, -0.5, 0.0, True, None, ""))
        ['LC', 'vcdr']
        >>> main_reasons(Rationale(0.87, 1.9, 0.42, "referable glaucoma", 0.78, f, 0.9, -0.5, 3.0, False, None, ""))
        []
    """
    if explained_share(r) < MIN_EXPLAINED_SHARE:
        return []
    floor = MIN_CONTRIBUTION if min_contribution is None else min_contribution
    return [code for code, value in reason_terms(r)[:most] if value >= floor]


def _with_article(phrase: str) -> str:
    if phrase.startswith("the ") or phrase.endswith("dots"):
        return phrase
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _counterfactual_changes(model, images, probability, threshold, method, options, min_change):
    if method is None:
        return [None] * images.shape[0]
    out: list[dict[str, Any] | None] = [None] * images.shape[0]
    positive = probability >= threshold
    for direction, chosen in (("decrease", positive), ("increase", ~positive)):
        index = torch.nonzero(chosen).flatten()
        if index.numel() == 0:
            continue
        cf = counterfactual(model, images[index], method=method, target="glaucoma", direction=direction, **options)
        for k, i in enumerate(index.tolist()):
            out[i] = {"method": method, "toward": "normal" if direction == "decrease" else "glaucoma",
                      "probability": [round(float(cf.probability[0, k]), 4), round(float(cf.probability[-1, k]), 4)],
                      "reached": bool(cf.reached[k]), "steps": int(cf.steps[k]),
                      "changes": edit_changes(cf, k, min_change)}
    return out


def _heatmaps(model, images, finding_prob) -> list[dict[str, Tensor]]:
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
