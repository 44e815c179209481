"""The code of the README and of the documentation's pages runs as written.

Every ```python block runs in a fresh namespace, in a folder holding the files the blocks name (a
small model where ``make demo`` puts its model, a concept-bottleneck one, ``eye.jpg``, ``eye.dcm``
and a tiny REFUGE tree). In the ```bash blocks, every ``xmed-train``/``-eval``/``-explain``/``-predict``/``-study``
line is composed with Hydra against the shipped configs and passes the value checks the commands
apply before they start; every ``xmed-data`` and ``xmed-review`` line parses. A failure names its
file and line. ``docs/explanation_study.md`` is left out: it reports a study's run.
"""

from __future__ import annotations

import itertools
import re
import shlex
import traceback
from pathlib import Path

import pytest
import torch
from PIL import Image

from xmed.cli.common import store_every_saliency_method
from xmed.data import render_phantom
from xmed.explain import METHODS
from xmed.models import FundusClassifier
from xmed.models.export import export_model

from helpers.commands import compose
from helpers.dicom import write_dicom
from helpers.published import build_refuge

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: the README and the documentation's pages, whose code is checked (not the explanation study's report)
DOCUMENTS = [README, *sorted(path for path in (ROOT / "docs").rglob("*.md")
                             if not path.relative_to(ROOT / "docs").parts[0].startswith("explanation_study"))]
#: the config each Hydra command composes
HYDRA_COMMANDS = {"xmed-train": "train", "xmed-eval": "eval", "xmed-explain": "explain", "xmed-predict": "predict",
                  "xmed-study": "study"}
#: ``<run>``, ``<phantom folder>``, ``<a folder of photographs or DICOM files>``…
PLACEHOLDER = re.compile(r"<[^<>]+>")
#: an optional argument written ``[key=value]`` or ``[--flag value]`` after a space
OPTIONAL = re.compile(r"(?<=\s)\[([^\[\]]*)\]")
#: the user's own config folder of the search-path example (docs/training.md)
USER_CONFIGS = "/abs/path/my_configs"


def code_blocks(language: str, document: Path = README) -> list[tuple[int, str]]:
    """``(line of the block's first code line, code)`` for every ```language block of ``document``.

    Example:
        >>> "xmed.explain(" in code_blocks("python")[0][1]
        True
    """
    blocks, start, lines = [], None, []
    for number, line in enumerate(document.read_text().splitlines(), start=1):
        if start is None and line.strip() == f"```{language}":
            start, lines = number + 1, []
        elif start is not None and line.strip() == "```":
            blocks.append((start, "\n".join(lines) + "\n"))
            start = None
        elif start is not None:
            lines.append(line)
    return blocks


def bash_commands(document: Path = README) -> list[tuple[int, str]]:
    """``(line, command)`` for every line of ``document``'s bash blocks; a line ending in ``\\``
    continues on the next one.

    Example:
        >>> any(command.startswith("make test") for _, command in bash_commands())
        True
    """
    commands = []
    for start, block in code_blocks("bash", document):
        pending, first = "", start
        for offset, line in enumerate(block.splitlines()):
            if not pending:
                first = start + offset
            continued = line.rstrip().endswith("\\")
            pending += line.rstrip().removesuffix("\\") + " " if continued else line
            if not continued:
                commands.append((first, pending))
                pending = ""
    return commands


def command_lines(name: str) -> list[tuple[str, str]]:
    """``(place, command)`` for the commands that run ``name`` in the README and the pages; the
    place is the file and line (``README.md:120``).

    Example:
        >>> all(command.startswith("xmed-data ") for _, command in command_lines("xmed-data"))
        True
    """
    return [(place(document, line), command) for document in DOCUMENTS for line, command in bash_commands(document)
            if command.split()[:1] == [name]]


def place(document: Path, line: int) -> str:
    """``docs/review.md:12``: a line of a document, named from the repository root."""
    return f"{document.relative_to(ROOT)}:{line}"


def arguments(command: str, user_configs: Path) -> list[str]:
    """The command's arguments as a shell passes them, placeholders replaced by a dummy path,
    optional ``[…]`` arguments given, the trailing comment dropped.

    Example:
        >>> arguments("xmed-eval ckpt_path=<run>/model [trainer=ddp]   # where it runs", Path("/c"))
        ['ckpt_path=run/model', 'trainer=ddp']
    """
    command = PLACEHOLDER.sub(lambda m: re.sub(r"\W+", "_", m.group(0)[1:-1]), command)
    command = OPTIONAL.sub(r"\1", command).replace(USER_CONFIGS, str(user_configs))
    return shlex.split(command, comments=True)[1:]


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The jobs ``-m`` starts: one per combination of the sweep overrides' values.

    Example:
        >>> sweep_jobs(["model=resnet18,efficientnet_b0", "seed=1"])
        [['model=resnet18', 'seed=1'], ['model=efficientnet_b0', 'seed=1']]
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    choices = [[f"{o.get_key_element()}={value}" for value in o.sweep_string_iterator()] if o.is_sweep_override()
               else [o.input_line] for o in OverridesParser.create().parse_overrides(overrides)]
    return [list(job) for job in itertools.product(*choices)]


def by_place(items: list[tuple[str, str]]) -> list:
    """Test parameters named after their file and line (``README.md:211``)."""
    return [pytest.param(where, text, id=where) for where, text in items]


@pytest.fixture(scope="module")
def reader_folder(tmp_path_factory) -> Path:
    """A folder holding what the Python blocks read: the models `make demo` and
    ``experiment=phantom_cbm`` export (untrained, tiny), ``eye.jpg``, ``eye.dcm`` and ``data/REFUGE``."""
    folder = tmp_path_factory.mktemp("reader")
    torch.manual_seed(0)
    export_model(FundusClassifier("test_resnet.r160_in1k", input_size=32, threshold=0.5),
                 folder / "outputs/demo/train/model")
    export_model(FundusClassifier("test_resnet.r160_in1k", input_size=32, mode="concept_bottleneck", threshold=0.5),
                 folder / "outputs/phantom_cbm/model")
    eye = render_phantom(seed=3, size=256).image
    Image.fromarray(eye).save(folder / "eye.jpg", quality=95)
    write_dicom(folder / "eye.dcm", eye)
    build_refuge(folder / "data/REFUGE")
    return folder


PYTHON_BLOCKS = [(document, line, source) for document in DOCUMENTS for line, source in code_blocks("python", document)]


@pytest.mark.parametrize("document, line, source",
                         [pytest.param(*block, id=place(*block[:2])) for block in PYTHON_BLOCKS])
def test_python_block_runs(document, line, source, reader_folder, monkeypatch):
    monkeypatch.chdir(reader_folder)
    monkeypatch.setenv("XMED_DICOM_SALT", "a site's own secret")  # as the README asks of a site
    code = compile("\n" * (line - 1) + source, str(document), "exec")  # tracebacks give the file's line numbers
    registered = set(METHODS)
    try:
        exec(code, {"__name__": "__readme__"})
    except Exception as error:
        failing = [frame.lineno for frame in traceback.extract_tb(error.__traceback__) if frame.filename == str(document)]
        pytest.fail(f"{place(document, failing[-1])}: {type(error).__name__}: {error}", pytrace=False)
    finally:  # a block that registers a method of its own leaves this process's registry as it was
        for name in set(METHODS) - registered:
            del METHODS[name]
        store_every_saliency_method()


HYDRA_LINES = [(where, command) for name in HYDRA_COMMANDS for where, command in command_lines(name)
               if "--help" not in command.split()]


def test_every_documented_command_is_checked():
    """Every xmed command the README and the pages show is one the tests below check, and each is shown."""
    shown = {command.split()[0] for document in DOCUMENTS for _, command in bash_commands(document)
             if command.startswith("xmed-")}
    assert shown == {*HYDRA_COMMANDS, *ARGPARSE_COMMANDS}


@pytest.mark.parametrize("where, command", by_place(HYDRA_LINES))
def test_hydra_command_composes(where, command, tmp_path, monkeypatch):
    from xmed.cli import config_rules

    # the documented experiment in its own config folder, as the search-path example describes it
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: resnet18\n")
    monkeypatch.setattr(config_rules, "check_devices", lambda cfg: None)  # a GPU line is checked on any machine
    overrides = arguments(command, tmp_path)
    jobs = sweep_jobs([o for o in overrides if o != "-m"]) if "-m" in overrides else [overrides]
    for job in jobs:
        try:
            config_rules.check_config(compose(HYDRA_COMMANDS[command.split()[0]], job))
        except Exception as error:
            pytest.fail(f"{where}: {job}: {type(error).__name__}: {error}", pytrace=False)


#: the argparse commands and their parsers' modules
ARGPARSE_COMMANDS = {"xmed-data": "xmed.cli.data", "xmed-review": "xmed.cli.review"}


@pytest.mark.parametrize("where, command", by_place([item for name in ARGPARSE_COMMANDS for item in command_lines(name)]))
def test_argparse_command_parses(where, command, tmp_path):
    import importlib

    name = command.split()[0]
    try:
        importlib.import_module(ARGPARSE_COMMANDS[name]).build_parser().parse_args(arguments(command, tmp_path))
    except SystemExit:
        pytest.fail(f"{where}: {name} does not accept {command!r}", pytrace=False)
