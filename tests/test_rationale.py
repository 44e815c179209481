"""The finding-level rationale: contributions add up, CBM terms are exact, output is JSON."""

from __future__ import annotations

import json

import pytest
import torch

from xmed.errors import ConfigError
from xmed.explain.rationale import (
    FindingEvidence,
    Rationale,
    concept_contributions,
    explained_share,
    finding_phrase,
    main_reasons,
    rationale,
    sentence,
)
from xmed.findings import FINDING_NAMES, FINDINGS, VCDR
from xmed.models import FundusClassifier


@pytest.fixture(scope="module")
def images():
    return torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("mode", ["multitask", "concept_bottleneck"])
def test_contributions_add_up_to_the_logit(mode, images):
    torch.manual_seed(1)
    model = FundusClassifier("test_resnet.r160_in1k", input_size=64, mode=mode).eval()
    parts = concept_contributions(model, images)
    total = parts["bias"] + parts["findings"].sum(1) + parts["vcdr"] + parts["unexplained"]
    assert torch.allclose(total, model(images)["logits"], atol=1e-5)
    assert parts["exact"] == (mode == "concept_bottleneck")
    if mode == "concept_bottleneck":
        assert torch.equal(parts["unexplained"], torch.zeros(3))
        weight = model.glaucoma_head.weight[0]
        # exact: weight × finding probability, weight × vCDR
        assert torch.allclose(parts["findings"], weight[:10] * parts["finding_prob"])
        assert torch.allclose(parts["vcdr"], weight[10] * parts["vcdr_value"])


def test_multitask_projection_recovers_a_head_built_from_the_findings(images):
    """A diagnosis head that *is* a combination of two finding heads is fully explained by them."""
    torch.manual_seed(2)
    model = FundusClassifier("test_resnet.r160_in1k", input_size=64).eval()
    with torch.no_grad():
        w = model.findings_head.weight
        model.glaucoma_head.weight.copy_((2.0 * w[FINDINGS.index("LC")] - 0.5 * w[FINDINGS.index("DH")])[None])
    parts = concept_contributions(model, images)
    assert parts["unexplained"].abs().max() < 1e-4
    others = [j for j, code in enumerate(FINDINGS) if code not in ("LC", "DH")]
    assert parts["findings"][:, others].abs().max() < 1e-4 and parts["vcdr"].abs().max() < 1e-4
    logit_lc = model(images)["finding_logits"][:, FINDINGS.index("LC")] - model.findings_head.bias[FINDINGS.index("LC")]
    assert torch.allclose(parts["findings"][:, FINDINGS.index("LC")], 2.0 * logit_lc, atol=1e-4)


def test_rationale_is_json_with_heatmaps_kept_apart(images):
    torch.manual_seed(3)
    model = FundusClassifier("test_resnet.r160_in1k", input_size=64, mode="concept_bottleneck").eval()
    with torch.no_grad():
        model.findings_head.bias[FINDINGS.index("DH")] = 10.0  # DH predicted present in every eye
    out = rationale(model, images, counterfactual=None)
    assert len(out) == 3
    for r in out:
        d = json.loads(json.dumps(r.to_dict()))
        assert [f["code"] for f in d["findings"]] == list(FINDINGS) and "heatmaps" not in d
        assert d["contribution_unit"] == "logit (log-odds of glaucoma)"
        assert d["decision"] in ("referable glaucoma", "no referable glaucoma") and d["sentence"].endswith(".")
        assert set(r.heatmaps) >= {"glaucoma", "DH"} and r.heatmaps["DH"].shape == (64, 64)
        assert r.findings[FINDINGS.index("DH")].probability > 0.99


def test_sentence_names_the_drivers_and_the_edit():
    findings = [FindingEvidence(code, code, 0.1, 0.0) for code in FINDINGS]
    findings[FINDINGS.index("RNFLDI")] = FindingEvidence("RNFLDI", "", 0.91, 1.4)
    r = Rationale(0.9, 2.2, 0.5, "referable glaucoma", 0.8, findings, 0.6, 0.2, 0.0, True,
                  {"toward": "normal", "changes": [{"code": "RNFLDI", "from": 0.91, "to": 0.1}]}, "")
    assert sentence(r) == ("Referable glaucoma: probability of glaucoma 0.90 (referable from 0.50). Main reasons: an "
                           "inferior RNFL defect (probability 0.91) and the vCDR of 0.80 (100% of the evidence for this decision). "
                           "An edit toward normal lowers "
                           "the probability of an inferior RNFL defect from 0.91 to 0.10.")


def test_sentence_reads_the_vcdr_change_by_its_canonical_code():
    findings = [FindingEvidence(code, FINDING_NAMES[code].full, 0.1, 0.0) for code in FINDINGS]
    findings[FINDINGS.index("LC")] = FindingEvidence("LC", FINDING_NAMES["LC"].full, 0.9, 1.2)
    r = Rationale(0.87, 1.9, 0.5, "referable glaucoma", 0.78, findings, 0.9, -0.5, 0.0, True,
                  {"toward": "normal", "changes": [{"code": VCDR, "from": 0.78, "to": 0.55},
                                                   {"code": "DH", "from": 0.4, "to": 0.2}]}, "")
    assert VCDR == "vcdr"
    assert sentence(r) == ("Referable glaucoma: probability of glaucoma 0.87 (referable from 0.50). Main reasons: a "
                           "large cup (probability 0.90) and the vCDR of 0.78 (100% of the evidence for this decision). An edit "
                           "toward normal lowers the vCDR "
                           "from 0.78 to 0.55 and lowers the probability of a disc haemorrhage from 0.40 to 0.20.")


def test_rationale_needs_named_heads(images):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64 * 64, 2))
    with pytest.raises(ConfigError, match="named heads"):
        rationale(net, images)


def test_counterfactual_summary_points_to_the_other_decision(images):
    torch.manual_seed(4)
    model = FundusClassifier("test_resnet.r160_in1k", input_size=64).eval()
    out = rationale(model, images, heatmaps=False, counterfactual_options={"max_steps": 3})
    for r in out:
        cf = r.counterfactual
        assert cf["toward"] == ("normal" if r.decision == "referable glaucoma" else "glaucoma")
        assert cf["probability"][0] == pytest.approx(r.probability, abs=1e-3) and 0 <= cf["steps"] <= 3
        moved = cf["probability"][1] - cf["probability"][0]
        assert moved <= 1e-6 if cf["toward"] == "normal" else moved >= -1e-6
        assert all(change["code"] in (*FINDINGS, "vcdr") for change in cf["changes"])
        json.dumps(r.to_dict())


def _referable(contributions: dict[str, tuple[float, float]], vcdr_term: float, unexplained: float) -> Rationale:
    """A referable decision with ``{code: (probability, contribution)}`` findings (others absent, 0)."""
    findings = [FindingEvidence(code, FINDING_NAMES[code].short, *contributions.get(code, (0.1, 0.0)))
                for code in FINDINGS]
    return Rationale(0.8, 1.4, 0.5, "referable glaucoma", 0.6, findings, vcdr_term, 0.0, unexplained, False, None, "")


def test_a_mostly_unexplained_decision_names_no_reason():
    """81-84 % of the evidence unexplained: no "Main reasons", the share is stated instead."""
    r = _referable({"LC": (0.9, 0.25)}, 0.05, 1.4)
    assert explained_share(r) == pytest.approx(0.3 / 1.7)
    assert main_reasons(r) == []
    assert "Main reasons" not in sentence(r)
    assert "No finding explains this decision: the findings present and the vCDR account for 18% of the evidence" \
        in sentence(r)


def test_findings_pushing_the_other_way_never_explain_a_referral():
    r = _referable({"LC": (0.9, -0.6), "DH": (0.7, -0.4)}, -0.2, 2.6)
    assert explained_share(r) == 0.0 and main_reasons(r) == []
    assert "account for 0% of the evidence" in sentence(r)


def test_an_absent_finding_is_never_a_reason_to_refer():
    """The projection can give an absent finding a positive term; it is not named, nor counted as explained."""
    r = _referable({"RNFLDS": (0.05, 1.0), "LC": (0.9, 0.8)}, 0.4, 0.0)
    assert main_reasons(r) == ["LC", "vcdr"]
    assert "no superior RNFL defect" not in sentence(r)
    assert explained_share(r) == pytest.approx(1.2 / 2.2)
    # for no referable glaucoma, the absent signs are the reasons and a present one never is
    findings = [FindingEvidence(code, "", 0.1, 0.0) for code in FINDINGS]
    findings[FINDINGS.index("LC")] = FindingEvidence("LC", "", 0.02, -1.0)
    findings[FINDINGS.index("DH")] = FindingEvidence("DH", "", 0.8, -0.9)
    normal = Rationale(0.1, -2.2, 0.5, "no referable glaucoma", 0.3, findings, -0.2, -0.1, 0.0, False, None, "")
    assert main_reasons(normal) == ["LC", "vcdr"]
    assert sentence(normal).count("no large cup (probability 0.02)") == 1 and "haemorrhage" not in sentence(normal)


def test_a_finding_has_one_name_in_the_table_and_the_sentence(images):
    torch.manual_seed(3)
    model = FundusClassifier("test_resnet.r160_in1k", input_size=64, mode="concept_bottleneck").eval()
    with pytest.warns(Warning):
        out = rationale(model, images, counterfactual=None, heatmaps=False)
    assert [f.name for f in out[0].findings] == [FINDING_NAMES[code].short for code in FINDINGS]
    assert finding_phrase("RNFLDS", True) == "a superior RNFL defect"
