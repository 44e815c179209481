"""The front door of the Hydra commands (``xmed-train``, ``xmed-eval``, ``xmed-explain``).

:func:`command` wraps a command's task function: the values users type are checked against one
table (:data:`xmed.cli.config_rules.CONFIG_RULES`) before anything loads, and an :class:`~xmed.errors.XmedError` ends
the run as one line, ``error: <message>``, on stderr and in the run's log file, with exit status
1. Any other exception keeps its traceback (Hydra prints it); ``HYDRA_FULL_ERROR=1`` shows one for
xmed's own errors too. In a sweep (``-m``) a failed job reports its error as it ends and the
sweep goes on; Hydra then names the first failed job's overrides and exits with status 1.

Example::

    @hydra.main(version_base="1.3", config_path=CONFIG_PACKAGE, config_name="eval")
    @command
    def main(cfg: DictConfig) -> float | None:
        ...
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Callable, TypeVar

from hydra.errors import CompactHydraException
from omegaconf import DictConfig

from xmed.cli.config_rules import check_config
from xmed.data.keywords import renamed_override
from xmed.errors import XmedError

log = logging.getLogger(__name__)
Result = TypeVar("Result")


class JobFailed(CompactHydraException):
    """A sweep job that ended on an :class:`~xmed.errors.XmedError`: Hydra prints it without a
    traceback once the sweep is over."""


def command(task: Callable[[DictConfig], Result]) -> Callable[[DictConfig], Result]:
    """The task function of a Hydra command, placed under ``@hydra.main``: the config is checked
    (:func:`check_config`) before the task runs, and an :class:`~xmed.errors.XmedError` is
    reported as described in this module's docstring.

    Example::

        @hydra.main(version_base="1.3", config_path=CONFIG_PACKAGE, config_name="eval")
        @command
        def main(cfg: DictConfig) -> float | None:
            return evaluate(cfg).get("auroc")
    """

    @functools.wraps(task)  # Hydra names the job (and its log file) after the wrapped function's module
    def run(cfg: DictConfig) -> Result:
        try:
            check_config(cfg)
            return task(cfg)
        except XmedError as err:
            log.error("%s", err)  # Hydra's file handler writes it into <run>/<job>.log
            print(f"error: {err}", file=sys.stderr, flush=True)
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            if _in_sweep():  # SystemExit would end the whole sweep; Hydra goes on past an Exception
                raise JobFailed(f"error: {err}") from None
            sys.exit(1)

    return run


#: Hydra's option that reruns a job from its ``config.pickle``: it unpickles the file it is given,
#: so a file someone handed over would run code
PICKLED_RERUN = "--experimental-rerun"


def read_command_line(main: Callable[..., Result]) -> Callable[..., Result]:
    """Placed above ``@hydra.main``: the command line is read before Hydra reads it.

    - Hydra's ``--experimental-rerun`` (and argparse's abbreviations of it, such as ``--exp``) is
      refused before Hydra reads the pickle, with a one-line error and exit status 2.
    - An override of a renamed config key (``data.augment.color=false``) is passed on under its new
      name (:func:`~xmed.data.keywords.renamed_override`), with a warning on stderr.

    Example::

        @read_command_line
        @hydra.main(version_base="1.3", config_path=CONFIG_PACKAGE, config_name="eval")
        @command
        def main(cfg: DictConfig) -> float | None: ...
    """

    @functools.wraps(main)
    def run(*args, **kwargs) -> Result:
        for position, arg in enumerate(sys.argv[1:], start=1):
            option = arg.split("=", 1)[0]
            if len(option) > 2 and PICKLED_RERUN.startswith(option):
                print(f"error: {option}: refused, it would unpickle the file it is given (code could run); rerun "
                      f"a job with the overrides in its .hydra/overrides.yaml instead", file=sys.stderr, flush=True)
                sys.exit(2)
            sys.argv[position], notice = renamed_override(arg)
            if notice is not None:
                print(f"warning: {notice}", file=sys.stderr, flush=True)
        return main(*args, **kwargs)

    return run


def _in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
