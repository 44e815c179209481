"""The commands' Hydra configs composed in-process: ``compose``, the overrides of the tiny training run
(``tiny_overrides``), and the published data sets one experiment trains on (``PUBLISHED``)."""

from __future__ import annotations

from pathlib import Path

from xmed.cli.common import CONFIG_DIR as CONFIGS  # the configs the installed package reads


def tiny_overrides(out: Path, n: int = 48, epochs: int = 1) -> list[str]:
    return ["data=phantom_render", f"data.dataset_options.n={n}", "data.dataset_options.size=48",
            "data.image_size=48", "data.batch_size=16", "data.num_workers=0", "model=tiny_test",
            f"trainer.max_epochs={epochs}", "n_bootstrap=20", "logger=none", f"paths.output_dir={out}"]


def compose(config: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONFIGS), version_base="1.3"):
            return hydra_compose(config, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


PUBLISHED = ("acrima", "airogs", "g1020", "justraigs", "origa", "papila", "refuge", "refuge2", "rimone_dl", "smdg")
