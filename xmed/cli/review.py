"""``xmed-review``: clinicians rate a model's explanations in the browser, and the ratings become a
reader study.

Examples::

    xmed-review build outputs/review --explain outputs/demo/explain          # from an xmed-explain run
    xmed-review build outputs/clinic --model runs/demo/model --images /data/clinic --mode open
    xmed-review reader outputs/review "Dr Ana Silva"      # prints the reader's private link
    xmed-review serve outputs/review                       # http://127.0.0.1:8765
    xmed-review export outputs/review --out outputs/review_report   # report.html, a PNG per case, ratings
    xmed-review analyse outputs/review --out outputs/review/analysis
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from xmed.checks import at_least
from xmed.errors import XmedError

DEFAULT_PORT = 8765


def _build(args: argparse.Namespace) -> int:
    from xmed.review.build import build_session
    from xmed.review.session import load_session

    folder = build_session(args.out, explain_dir=args.explain, model=args.model, images=args.images,
                           methods=args.methods, counterfactual=not args.no_counterfactual, mode=args.mode,
                           seed=args.seed, n=args.n, batch_size=args.batch_size, overwrite=args.overwrite,
                           title=args.title, progress=not args.quiet)
    session = load_session(folder)
    print(f"review session of {len(session['cases'])} eyes ({session['mode']}; "
          f"{', '.join(m['title'] for m in session['methods'])}) in {folder.resolve()}")
    if session["skipped"]:
        print(f"  {len(session['skipped'])} unreadable file(s) left out: see 'skipped' in session.json")
    print(f"  add a reader:  xmed-review reader {folder} NAME\n  serve:         xmed-review serve {folder}")
    return 0


def _reader(args: argparse.Namespace) -> int:
    from xmed.review.session import load_session
    from xmed.review.store import RatingStore

    load_session(args.session)
    token = RatingStore(Path(args.session) / "ratings.sqlite").add_reader(args.name)
    print(f"reader {args.name!r} added. Their private link (share it with them only):\n"
          f"  http://127.0.0.1:{args.port}/login?token={token}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from xmed.review.server import serve

    serve(args.session, host=args.host, port=args.port, allow_remote=args.allow_remote)
    return 0


def _export(args: argparse.Namespace) -> int:
    from xmed.review.export import export_report
    from xmed.review.store import RatingStore

    out = Path(args.out)
    report = export_report(args.session, out)
    store_path = Path(args.session) / "ratings.sqlite"
    written = [report, out / "cases"]
    if store_path.is_file():
        store = RatingStore(store_path)
        store.export_csv(out / "ratings.csv")
        store.export_json(out / "ratings.json")
        written += [out / "ratings.csv", out / "ratings.json"]
    print("wrote\n" + "\n".join(f"  {path.resolve()}" for path in written))
    return 0


def _analyse(args: argparse.Namespace) -> int:
    from xmed.review.analysis import SCALES
    from xmed.review.study import analyse_session

    report = analyse_session(args.session, ratings=args.ratings, out=args.out, n_bootstrap=args.bootstrap)
    print(f"{report['n_ratings']} ratings by {len(report['readers'])} reader(s) of {report['n_cases']} cases")
    for method, scales in report["scores"].items():
        line = ", ".join(f"{scale} {scales[scale]['mean']:.2f} [{scales[scale]['ci_low']:.2f}, "
                         f"{scales[scale]['ci_high']:.2f}]" for scale in SCALES if scales[scale]["mean"] is not None)
        print(f"  {method}: {line}")
    for comparison in report["comparisons"]:
        print(f"  {comparison['a']} vs {comparison['b']} ({comparison['scale']}): Wilcoxon p = {comparison['p_value']}")
    if args.out:
        print(f"analysis in {Path(args.out).resolve()} (analysis.json, scores.png)")
    else:
        print(json.dumps(report["agreement"], indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xmed-review", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build", help="make a review session from an xmed-explain run, or a model and images")
    p.add_argument("out", type=Path, help="the session folder to create")
    p.add_argument("--explain", type=Path, help="an xmed-explain run folder (its model, eyes and maps)")
    p.add_argument("--model", type=Path, help="an exported model folder (with --images)")
    p.add_argument("--images", type=Path, help="a folder of photographs or DICOM files (with --model)")
    p.add_argument("--methods", type=lambda text: [m for m in text.split(",") if m],
                   help="saliency methods, comma-separated (default: the explain run's, or gradcam)")
    p.add_argument("--no-counterfactual", action="store_true", help="leave out the adversarial edit pair")
    p.add_argument("--mode", choices=("blinded", "open"), default="blinded",
                   help="blinded: each reader's own case order, methods hidden behind A/B (the study protocol)")
    p.add_argument("--seed", type=at_least(0), default=0, help="seeds the readers' orders and A/B letters")
    p.add_argument("--n", type=at_least(1), default=None, help="only the first N eyes")
    p.add_argument("--batch-size", type=at_least(1), default=8)
    p.add_argument("--title", default=None)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier session in OUT")
    p.set_defaults(run=_build)

    p = sub.add_parser("reader", help="add a reader to a session and print their private link")
    p.add_argument("session", type=Path)
    p.add_argument("name")
    p.add_argument("--port", type=at_least(1), default=DEFAULT_PORT, help="the port the link points at")
    p.set_defaults(run=_reader)

    p = sub.add_parser("serve", help="serve the review page (127.0.0.1 unless --host and --allow-remote)")
    p.add_argument("session", type=Path)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=at_least(1), default=DEFAULT_PORT)
    p.add_argument("--allow-remote", action="store_true", help="accept a --host that is not this machine")
    p.set_defaults(run=_serve)

    p = sub.add_parser("export", help="a static HTML report, a PNG per case and the ratings (CSV, JSON)")
    p.add_argument("session", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(run=_export)

    p = sub.add_parser("analyse", help="the reader study: scores, Wilcoxon tests, agreement, plots")
    p.add_argument("session", type=Path)
    p.add_argument("--ratings", type=Path, default=None, help="a ratings CSV (default: the session's store)")
    p.add_argument("--out", type=Path, default=None, help="write analysis.json and scores.png here")
    p.add_argument("--bootstrap", type=at_least(100), default=2000, help="bootstrap resamples")
    p.set_defaults(run=_analyse)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except XmedError as err:
        print(f"xmed-review: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
