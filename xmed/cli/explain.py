"""``xmed-explain``: saliency maps, counterfactual edits and rationales of a trained model, scored per method.

Explains the first ``n`` eyes of a split with one or several explainers (the ``explainer`` config
group), through Lightning's predict loop (``trainer=ddp`` spreads the work over GPUs), and writes
(:func:`xmed.pipeline.explanation.explain_run` does the work)::

    <run>/metrics.json          {method: {metric: mean over eyes, ...}, ...}
    <run>/comparison.md         the same as a Markdown table (direction of each metric marked)
    <run>/per_image.csv         every metric of every eye and method
    <run>/maps/<method>/<id>.npy       raw maps (float32, input resolution)
    <run>/overlays/<method>/<id>.png   map over the photograph, ground truth outlined
    <run>/overlays/comparison.png      eyes × methods contact sheet

Examples::

    xmed-explain ckpt_path=outputs/run/model 'explainer=[gradcam,integrated_gradients]' n=16
    xmed-explain ckpt_path=outputs/run/model explainer=adversarial label=1 model_card=outputs/run/model_card.md
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from xmed.cli.common import CONFIG_PACKAGE
from xmed.cli.entry import command, read_command_line


@read_command_line
@hydra.main(version_base="1.3", config_path=CONFIG_PACKAGE, config_name="explain")
@command
def main(cfg: DictConfig) -> None:
    # here: Lightning and timm load once the config is checked (--help and a bad override answer at once)
    from xmed.pipeline.explanation import explain_run

    explain_run(cfg)


if __name__ == "__main__":
    main()
