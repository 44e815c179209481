"""What a counterfactual path must hold: ``assert_path_is_the_models`` (the findings, vCDR and
target probability it records are the model's own outputs on its frames)."""

from __future__ import annotations

import torch

from xmed.findings import canonical_target


def assert_path_is_the_models(model, cf, target: str) -> None:
    """The findings, vCDR and target probability recorded along a 2-image path are the model's own
    outputs on the recorded frames."""
    t = cf.frames.shape[0]
    with torch.no_grad():
        out = model(cf.frames.flatten(0, 1))
    assert torch.allclose(cf.findings, torch.sigmoid(out["finding_logits"]).view(t, 2, -1), atol=1e-5)
    assert torch.allclose(cf.vcdr, out["vcdr"].view(t, 2), atol=1e-5)
    expected = {"glaucoma": torch.sigmoid(out["logits"]), "DH": torch.sigmoid(out["finding_logits"][:, 7]),
                "vcdr": out["vcdr"]}[canonical_target(target)].view(t, 2)
    assert torch.allclose(cf.probability, expected, atol=1e-5)
