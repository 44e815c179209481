"""``xmed-review``: clinicians rate a model's explanations in the browser, and the ratings become a
reader study.

Examples::

    xmed-review build outputs/review --explain outputs/demo/explain          # from an xmed-explain run
    xmed-review build outputs/clinic --model runs/demo/model --images /data/clinic --mode open
    xmed-review serve outputs/review                       # http://127.0.0.1:8765, recorded for the links
    xmed-review reader outputs/review "Dr Ana Silva"      # prints the reader's private link
    xmed-review readers list outputs/review                # who can sign in, and cases rated / total
    xmed-review readers link outputs/review "Dr Ana Silva"    # a new link for a lost one (the old stops)
    xmed-review readers revoke outputs/review "Dr Ana Silva"   # ends their sign-in; ratings stay
    xmed-review lock outputs/review                        # no rating changes any more; unblinds readers
    xmed-review export outputs/review --out outputs/review_report   # report.html, a PNG per case, ratings
    xmed-review analyse outputs/review --out outputs/review/analysis
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from xmed.checks import at_least
from xmed.errors import PathError, XmedError

#: what ``analyse --out`` writes (a folder holding anything else is not written into)
ANALYSIS_CONTENTS = ("analysis.json", "scores.png")


def _between(minimum: int, maximum: int):
    """An argparse ``type``: a whole number from ``minimum`` to ``maximum``.

    Example:
        >>> _between(1, 65535)("8765")
        8765
    """
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:  # not a number, or more digits than Python reads
            value = None
        if value is None or not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"expected an integer from {minimum} to {maximum}, got {text!r}")
        return value

    return parse


PORT = _between(1, 65535)


def _build(args: argparse.Namespace) -> int:
    # here, as in every subcommand: each loads what it uses (the build torch, serve Starlette; --help none)
    from xmed.review.build import build_session
    from xmed.review.session import load_session

    folder = build_session(args.out, explain_dir=args.explain, model=args.model, images=args.images,
                           methods=args.methods, counterfactual=not args.no_counterfactual, mode=args.mode,
                           seed=args.seed, n=args.n, batch_size=args.batch_size, overwrite=args.overwrite,
                           title=args.title, progress=not args.quiet, normal=args.normal,
                           display_side=args.display_side)
    session = load_session(folder)
    print(f"review session of {len(session['cases'])} eyes ({session['mode']}; "
          f"{', '.join(m['title'] for m in session['methods'])}) in {folder.resolve()}")
    if session["skipped"]:
        print(f"  {len(session['skipped'])} unreadable file(s) left out: see 'skipped' in session.json")
    print(f"  add a reader:  xmed-review reader {folder} NAME\n  serve:         xmed-review serve {folder}")
    return 0


def _print_link(session: Path, base: str | None, name: str, token: str, what: str) -> None:
    """The reader's sign-in link at ``base``, the address ``serve`` recorded (None before it first
    ran: then its default address)."""
    from xmed.review.session import DEFAULT_HOST, DEFAULT_PORT, base_url

    if base is None:
        print(f"(not served yet: the link is for `xmed-review serve`'s default address; served elsewhere, "
              f"`xmed-review readers link {_quoted(session)} {_quoted(name)}` gives one for that address)")
    link = f"{base or base_url(DEFAULT_HOST, DEFAULT_PORT)}/login?token={token}"
    print(f"reader {name!r} {what}. Their private link (share it with them only):\n  {link}")


def _quoted(value: object) -> str:
    return shlex.quote(str(value))


def _reader(args: argparse.Namespace) -> int:
    from xmed.review.session import load_session, session_url
    from xmed.review.store import STORE_FILE, RatingStore, reader_name

    load_session(args.session)
    base, name = session_url(args.session), reader_name(args.name)  # a damaged address.json: nothing added
    token = RatingStore(Path(args.session) / STORE_FILE).add_reader(name)
    _print_link(args.session, base, name, token, "added")
    return 0


def _readers_link(args: argparse.Namespace) -> int:
    from xmed.review.session import load_session, session_url
    from xmed.review.store import STORE_FILE, RatingStore

    load_session(args.session)
    base = session_url(args.session)  # a damaged address.json: the old link keeps working
    name, token = RatingStore(Path(args.session) / STORE_FILE).renew_token(args.name)
    _print_link(args.session, base, name, token, "has a new link; the old one no longer signs in")
    return 0


def _store(session_dir: Path):
    """The session's ratings store, or None before its first reader (nothing is created here)."""
    from xmed.review.store import STORE_FILE, RatingStore

    path = session_dir / STORE_FILE
    return RatingStore(path) if path.is_file() else None


def _reader_lines(session_dir: Path, session: dict) -> list[str]:
    """One line per reader of the session: name, whether they can sign in, when added, and how far
    they got (cases fully rated / all cases, and cases started)."""
    store = _store(session_dir)
    expected = {case["id"]: list(case["panels"]) for case in session["cases"]}
    lines = []
    for reader in store.reader_list() if store else []:
        state = f"revoked {reader['revoked'][:16]}" if reader["revoked"] else "can sign in"
        done = sum(store.progress(reader["name"], expected).values())
        lines.append(f"{reader['name']}\t{state}\tadded {reader['created'][:16]}\t"
                     f"{done}/{len(expected)} cases rated ({reader['cases']} started)")
    return lines


def _lock_line(session_dir: Path) -> str:
    store = _store(session_dir)
    locked = store and store.locked()
    return f"study locked on {_when(locked)}: ratings can no longer change" if locked else "study not locked"


def _when(iso: str) -> str:
    """``2025-03-01T10:00:00.000+00:00`` as ``2025-03-01 10:00 UTC``."""
    return f"{iso[:10]} {iso[11:16]} UTC"


def _readers_list(args: argparse.Namespace) -> int:
    from xmed.review.session import load_session

    lines = _reader_lines(args.session, load_session(args.session))
    print("\n".join(lines) or f"no readers yet; add one with: xmed-review reader {_quoted(args.session)} NAME")
    print(_lock_line(args.session))
    return 0


def _lock(args: argparse.Namespace) -> int:
    from xmed.review.session import load_session
    from xmed.review.store import STORE_FILE, RatingStore

    session = load_session(args.session)
    store = RatingStore(Path(args.session) / STORE_FILE)
    already = store.locked()
    locked = store.lock()
    print(f"study {'was already' if already else 'now'} locked ({_when(locked)}): ratings can no longer change"
          + ("; each reader's page and download now name the method behind each letter"
             if session["mode"] == "blinded" else ""))
    print("\n".join(_reader_lines(args.session, session) or ["no readers"]))
    print(f"the complete ratings: xmed-review export {_quoted(args.session)} --out FOLDER")
    return 0


def _readers_revoke(args: argparse.Namespace) -> int:
    from xmed.review.session import load_session
    from xmed.review.store import STORE_FILE, RatingStore

    load_session(args.session)
    name = RatingStore(Path(args.session) / STORE_FILE).revoke_reader(args.name)
    print(f"reader {name!r} revoked: their link and open pages stop working now; their ratings stay")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from xmed.review.server import serve

    serve(args.session, host=args.host, port=args.port, allow_remote=args.allow_remote,
          announce=lambda url: _announce(args.session, url))
    return 0


def _announce(session_dir: Path, url: str) -> None:
    """What ``serve`` tells the coordinator: where the page is, how readers get in, how far each got."""
    from xmed.review.session import ADDRESS_FILE, load_session

    session = _quoted(session_dir)
    print(f"review page of {session_dir} at {url} (recorded in {session_dir / ADDRESS_FILE}: readers' links point "
          f"there)\nreaders sign in with their private link only; the address alone answers 'not signed in'.\n"
          f"links are not stored (only digests): `xmed-review reader {session} NAME` adds a reader and prints "
          f"their link, `xmed-review readers link {session} NAME` prints a new one for a reader who lost theirs")
    lines = _reader_lines(session_dir, load_session(session_dir)) or ["no readers yet"]
    print("\n".join(f"  {line}" for line in [*lines, _lock_line(session_dir)]), flush=True)


def _export(args: argparse.Namespace) -> int:
    from xmed.review.export import export_report

    report = export_report(args.session, args.out, ratings_files=True)
    print("wrote\n" + "\n".join(f"  {path.resolve()}" for path in sorted(report.parent.iterdir())))
    return 0


def _analyse(args: argparse.Namespace) -> int:
    from xmed.review.analysis import SCALES
    from xmed.review.export import check_out_dir
    from xmed.review.study import analyse_session

    if args.out is not None:
        check_out_dir(args.out, ANALYSIS_CONTENTS, "analysis")
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
    from xmed.review.analysis import MAX_BOOTSTRAP
    from xmed.review.session import DEFAULT_HOST, DEFAULT_PORT

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
    p.add_argument("--normal", type=at_least(1), default=None,
                   help="also N eyes without glaucoma from the --explain run's split (explained here)")
    p.add_argument("--batch-size", type=at_least(1), default=8)
    p.add_argument("--display-side", type=at_least(1), default=None,
                   help="the longest side, in pixels, a photograph is shown at where the model saw a reduced copy "
                        "(default 896)")
    p.add_argument("--title", default=None)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier session in OUT")
    p.set_defaults(run=_build)

    p = sub.add_parser("reader", help="add a reader to a session and print their private link (at the address "
                                      "`serve` recorded)")
    p.add_argument("session", type=Path)
    p.add_argument("name")
    p.set_defaults(run=_reader)

    p = sub.add_parser("readers", help="list a session's readers, give one a new link, or revoke one's sign-in")
    actions = p.add_subparsers(dest="action", required=True)
    q = actions.add_parser("list", help="each reader: whether they can sign in, when added, cases rated / total")
    q.add_argument("session", type=Path)
    q.set_defaults(run=_readers_list)
    q = actions.add_parser("link", help="a new private link for a reader (their old one stops working)")
    q.add_argument("session", type=Path)
    q.add_argument("name")
    q.set_defaults(run=_readers_link)
    q = actions.add_parser("revoke", help="end a reader's sign-in now (their link and cookie); ratings stay")
    q.add_argument("session", type=Path)
    q.add_argument("name")
    q.set_defaults(run=_readers_revoke)

    p = sub.add_parser("serve", help="serve the review page (127.0.0.1 unless --host and --allow-remote) and "
                                     "record its address for the readers' links")
    p.add_argument("session", type=Path)
    p.add_argument("--host", default=DEFAULT_HOST)
    p.add_argument("--port", type=PORT, default=DEFAULT_PORT)
    p.add_argument("--allow-remote", action="store_true", help="accept a --host that is not this machine")
    p.set_defaults(run=_serve)

    p = sub.add_parser("lock", help="lock the study: no rating changes any more, and blinded readers see the methods")
    p.add_argument("session", type=Path)
    p.set_defaults(run=_lock)

    p = sub.add_parser("export", help="a static HTML report, a PNG per case and the ratings (CSV, JSON)")
    p.add_argument("session", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(run=_export)

    p = sub.add_parser("analyse", help="the reader study: scores, Wilcoxon tests, agreement, plots")
    p.add_argument("session", type=Path)
    p.add_argument("--ratings", type=Path, default=None, help="a ratings CSV (default: the session's store)")
    p.add_argument("--out", type=Path, default=None, help="write analysis.json and scores.png here")
    p.add_argument("--bootstrap", type=_between(100, MAX_BOOTSTRAP), default=2000,
                   help=f"bootstrap resamples (100 to {MAX_BOOTSTRAP})")
    p.set_defaults(run=_analyse)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except XmedError as err:
        print(f"xmed-review: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # what the system refused: a folder not writable, a full disk, a port in use
        print(f"xmed-review: error: {PathError(err.filename, err.strerror) if err.filename else err}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
