"""``xmed-data``: render the phantom, inspect a data set, draw a contact sheet.

Examples::

    xmed-data phantom --out data/phantom --n 2000 --size 256 --seed 0
    xmed-data phantom --out data/phantom_sc --n 2000 --size 256 --shortcut 0.9
    xmed-data inspect --dataset refuge --root /data/REFUGE --json
    xmed-data sheet --out docs/phantom_contact_sheet.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from xmed.checks import at_least, json_object
from xmed.errors import ConfigError, XmedError


def _phantom(args: argparse.Namespace) -> int:
    # here, as below: each subcommand loads what it uses (`xmed-data --help` loads neither torch nor OpenCV)
    from xmed.data.phantom.writer import write_phantom_dataset

    summary = write_phantom_dataset(
        args.out, n=args.n, size=args.size, seed=args.seed, prevalence=args.prevalence,
        shortcut=args.shortcut, image_format=args.format, workers=args.workers,
        progress=not args.quiet, overwrite=args.overwrite,
    )
    out = Path(args.out).resolve()
    print(f"wrote {summary['n']} eyes ({summary['n_positive']} glaucoma) at {summary['size']} px "
          f"in {summary['seconds']} s")
    for name, path in (("images", "images"), ("masks", "masks"), ("labels", "labels.csv"), ("parameters", "phantom.json")):
        print(f"  {name:<11} {out / path}")
    if summary["oracle_auroc"] is not None:
        print(f"  oracle AUROC {summary['oracle_auroc']:.4f} (the best any model can score on these eyes)")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from xmed.data.datasets import get_dataset
    from xmed.data.inspect import format_report, inspect_dataset

    dataset = get_dataset(args.dataset, args.root, on_error="skip", **(args.options or {}))
    report = inspect_dataset(dataset, decode=not args.no_decode, progress=not args.json)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def _sheet(args: argparse.Namespace) -> int:
    import cv2

    from xmed.viz.grid import phantom_sheet

    sheet = phantom_sheet(args.seed, args.n, args.size, args.columns, width=args.thumb)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), sheet[..., ::-1])
    print(f"wrote contact sheet of {args.n} phantom eyes to {Path(args.out).resolve()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xmed-data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("phantom", help="render a phantom data set to disk")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--n", type=int, default=1000, help="number of eyes")
    p.add_argument("--size", type=int, default=512, help="image side in pixels")
    p.add_argument("--seed", type=at_least(0), default=0)
    p.add_argument("--prevalence", type=float, default=0.3, help="P(glaucoma)")
    p.add_argument("--shortcut", type=float, nargs="?", const=0.9, default=None,
                   help="draw a marker correlated with the label in the training split "
                        "(strength in [0, 1]; 0.9 when given without a value)")
    p.add_argument("--format", choices=("png", "jpg"), default="png")
    p.add_argument("--workers", type=at_least(0), default=0, help="processes (0: one per core)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier data set in --out "
                   "(otherwise a non-empty --out is refused)")
    p.set_defaults(run=_phantom)

    p = sub.add_parser("inspect", help="count a data set and list unreadable or skipped files")
    p.add_argument("--dataset", required=True, help="registered data set name, e.g. phantom, refuge")
    p.add_argument("--root", type=Path, help="data set folder (not needed for phantom_render)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-decode", action="store_true", help="read labels only, do not decode images")
    p.add_argument("--options", type=json_object,
                   help="extra data set arguments as JSON, e.g. '{\"split\": \"test\"}'")
    p.set_defaults(run=_inspect)

    p = sub.add_parser("sheet", help="draw a contact sheet of phantom renders")
    p.add_argument("--out", type=Path, default=Path("docs/phantom_contact_sheet.png"))
    p.add_argument("--n", type=at_least(1), default=16)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--seed", type=at_least(0), default=0)
    p.add_argument("--columns", type=at_least(1), default=4)
    p.add_argument("--thumb", type=at_least(0), default=0, help="resize the sheet to this width (0: full size)")
    p.set_defaults(run=_sheet)
    return parser


#: the argument behind each data config key :func:`~xmed.data.get_dataset` names
CONFIG_ARGUMENTS = {"data.dataset": "dataset", "data.root": "root", "data.dataset_options": "options"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except XmedError as err:
        print(f"xmed-data: error: {in_command_line_words(err, args)}", file=sys.stderr)
        return 2


def in_command_line_words(err: XmedError, args: argparse.Namespace) -> str:
    """The message of ``err``, a config key that stands for one of the command's arguments named as
    that argument (``--n`` for the phantom writer's ``n``, ``--root`` for ``data.root``).

    Example:
        >>> in_command_line_words(ConfigError("n", "must be at least 1, got 0"), argparse.Namespace(n=0))
        'argument --n: must be at least 1, got 0'
    """
    if isinstance(err, ConfigError):
        dest = CONFIG_ARGUMENTS.get(err.key, err.key)
        if dest in vars(args):
            return f"argument --{dest.replace('_', '-')}: {err.reason}"
    return str(err)


if __name__ == "__main__":
    sys.exit(main())
