"""Where the Hydra commands find their configs.

The configs live in ``configs/`` at the repository's top level and ship inside the package as
``xmed.configs`` (pyproject's ``package-dir``); every command reads them from there
(``pkg://xmed.configs``), so an installed wheel needs no source tree. A user's own config folder
joins them through Hydra's search path: ``xmed-train 'hydra.searchpath=[file:///my/configs]'
experiment=mine`` (its groups and files sit beside the shipped ones, which are found first).

Example:
    >>> CONFIG_PACKAGE, (CONFIG_DIR / "train.yaml").is_file()
    ('pkg://xmed.configs', True)
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Iterable

CONFIG_PACKAGE = "pkg://xmed.configs"
CONFIG_DIR = Path(str(resources.files("xmed.configs")))


def store_every_saliency_method(names: Iterable[str] | None = None) -> list[str]:
    """Make ``explainer=all`` select every registered saliency method, each with its config file.

    Hydra cannot glob a config group, so ``explainer/all`` is a config built here, in Hydra's config
    store, whose defaults list names each method's own file (``explainer/<name>.yaml`` anywhere on
    the search path): a method added as its class and that file joins it without a third edit. The
    commands store it when they load; a program that registers a method of its own calls this again.
    ``names``: these methods instead of every registered one.

    Example:
        >>> store_every_saliency_method()[:3]
        ['gradcam', 'gradcampp', 'hirescam']
    """
    from hydra.core.config_store import ConfigStore

    from xmed.explain import EXPLAINERS

    names = list(EXPLAINERS if names is None else names)
    ConfigStore.instance().store(group="explainer", name="all", node={"defaults": names},
                                 provider="xmed")
    return names


store_every_saliency_method()
