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

CONFIG_PACKAGE = "pkg://xmed.configs"
CONFIG_DIR = Path(str(resources.files("xmed.configs")))
