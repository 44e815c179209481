"""Hostile input to ``xmed-review`` outside the page: a hand-edited ``session.json`` is refused
naming the field at fault, every spelling of the wildcard address and every port out of range is
refused, ``analyse`` and ``export`` fail in one line (or not at all while the server writes),
readers are listed and revoked, look-alike reader names are refused, and no CSV cell is a
spreadsheet formula."""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import get_args, get_type_hints

import pytest

from xmed.cli.review import main
from xmed.errors import ConfigError, InputError, PathError
from xmed.review.analysis import Rating, analyse
from xmed.review.server import create_app, serve
from xmed.review.session import (ADDRESS_FILE, EDITS, SESSION_FILE, CounterfactualPanel, EditEntry, load_session,
                                 write_session)
from xmed.review.store import STORE_FILE, RatingStore, ratings_csv
from xmed.review.synthetic import synthetic_session

class _Delete:
    """In SCHEMA: remove the key (named in test ids, so that every test process collects the same ids)."""

    def __repr__(self) -> str:
        return "DELETE"


DELETE = _Delete()
DIGITS = "9" * 5000


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Path:
    return synthetic_session(tmp_path_factory.mktemp("review"), n_cases=2, size=64)


def copied(session: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(session, tmp_path / "session"))


def failed(argv: list[str], capsys) -> str:
    """The one-line error ``xmed-review`` prints for ``argv`` (exit status 2, no traceback)."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("xmed-review: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


# -- a hand-edited session.json -------------------------------------------------------------------

SCHEMA = [  # (where, new value, the error after "session.json: ")
    (("format",), 2, "format: expected 1, got 2"),
    (("format",), "1", 'format: expected 1, got "1"'),
    (("format",), True, "format: expected 1, got true"),
    (("title",), None, "title: expected text, got null"),
    (("title",), ["a"], 'title: expected text, got ["a"]'),
    (("created",), 20240101, "created: expected text, got 20240101"),
    (("mode",), "closed", 'mode: expected one of blinded, open, got "closed"'),
    (("mode",), DELETE, "mode: missing"),
    (("seed",), -1, "seed: expected an integer ≥ 0, got -1"),
    (("seed",), 1.5, "seed: expected an integer ≥ 0, got 1.5"),
    (("seed",), "0", 'seed: expected an integer ≥ 0, got "0"'),
    (("seed",), False, "seed: expected an integer ≥ 0, got false"),
    (("target",), None, "target: expected text, got null"),
    (("threshold",), None, "threshold: expected a number > 0 and < 1, got null"),
    (("threshold",), 0, "threshold: expected a number > 0 and < 1, got 0"),
    (("threshold",), 1, "threshold: expected a number > 0 and < 1, got 1"),
    (("threshold",), 1.5, "threshold: expected a number > 0 and < 1, got 1.5"),
    (("threshold",), -0.5, "threshold: expected a number > 0 and < 1, got -0.5"),
    (("threshold",), "0.5", 'threshold: expected a number > 0 and < 1, got "0.5"'),
    (("threshold",), True, "threshold: expected a number > 0 and < 1, got true"),
    (("threshold",), [0.5], "threshold: expected a number > 0 and < 1, got [0.5]"),
    (("threshold",), 10 ** 99, f"threshold: expected a number > 0 and < 1, got {str(10 ** 99)[:59]}…"),
    (("threshold",), DELETE, "threshold: missing"),
    (("model",), "resnet", 'model: expected an object, got "resnet"'),
    (("model", "mode"), "linear", 'model.mode: expected one of multitask, concept_bottleneck, got "linear"'),
    (("model", "name"), DELETE, "model.name: missing"),
    (("bottleneck",), [], "bottleneck: expected an object or null, got []"),
    (("bottleneck", "concepts"), [], "bottleneck.concepts: expected a non-empty list, got []"),
    (("bottleneck", "concepts", 0), 3, "bottleneck.concepts[0]: expected text, got 3"),
    (("bottleneck", "weights"), "heavy", 'bottleneck.weights: expected a list, got "heavy"'),
    (("bottleneck", "weights", 1), "a", 'bottleneck.weights[1]: expected a number, got "a"'),
    (("bottleneck", "weights", 1), None, "bottleneck.weights[1]: expected a number, got null"),
    (("bottleneck", "weights"), [1.0], "bottleneck.weights: expected one per concept (11), got 1"),
    (("bottleneck", "bias"), None, "bottleneck.bias: expected a number, got null"),
    (("methods",), [], "methods: expected a non-empty list, got []"),
    (("methods",), {}, "methods: expected a non-empty list, got {}"),
    (("methods", 0), "gradcam", 'methods[0]: expected an object, got "gradcam"'),
    (("methods", 0, "kind"), "heatmap", 'methods[0].kind: expected one of saliency, counterfactual, got "heatmap"'),
    (("methods", 0, "name"), "", 'methods[0].name: expected a non-empty printable text without surrounding spaces, '
                                 'at most 200 characters, got ""'),
    (("methods", 0, "name"), " gradcam", 'methods[0].name: expected a non-empty printable text without surrounding '
                                         'spaces, at most 200 characters, got " gradcam"'),
    (("methods", 0, "title"), None, "methods[0].title: expected text, got null"),
    (("methods", 2), "copy of 0", 'methods[2].name: "gradcam" is listed twice'),
    (("cases",), [], "cases: expected a non-empty list, got []"),
    (("cases",), None, "cases: expected a non-empty list, got null"),
    (("cases", 1), "case-002", 'cases[1]: expected an object, got "case-002"'),
    (("cases", 1, "size"), "big", 'cases[1].size: expected [height, width] of positive integers, got "big"'),
    (("cases", 1, "size"), [0, 64], "cases[1].size: expected [height, width] of positive integers, got [0, 64]"),
    (("cases", 1, "size"), [64], "cases[1].size: expected [height, width] of positive integers, got [64]"),
    (("cases", 1, "size"), [64, 64, 3], "cases[1].size: expected [height, width] of positive integers, "
                                        "got [64, 64, 3]"),
    (("cases", 1, "size"), [64.0, 64], "cases[1].size: expected [height, width] of positive integers, "
                                       "got [64.0, 64]"),
    (("cases", 1, "size"), [True, 64], "cases[1].size: expected [height, width] of positive integers, "
                                       "got [true, 64]"),
    (("cases", 1, "size"), None, "cases[1].size: expected [height, width] of positive integers, got null"),
    (("cases", 1, "size"), DELETE, "cases[1].size: missing"),
    (("cases", 0, "id"), 7, "cases[0].id: expected a non-empty printable text without surrounding spaces, "
                            "at most 200 characters, got 7"),
    (("cases", 0, "id"), "a\nb", 'cases[0].id: expected a non-empty printable text without surrounding spaces, '
                                 'at most 200 characters, got "a\\nb"'),
    (("cases", 0, "id"), "case-002", 'cases[1].id: "case-002" is the id of an earlier case; case ids must be distinct'),
    (("cases", 0, "side"), "OD", 'cases[0].side: expected one of right, left, null, got "OD"'),
    (("cases", 0, "probability"), 1.2, "cases[0].probability: expected a number in [0, 1], got 1.2"),
    (("cases", 0, "probability"), -0.1, "cases[0].probability: expected a number in [0, 1], got -0.1"),
    (("cases", 0, "probability"), "0.5", 'cases[0].probability: expected a number in [0, 1], got "0.5"'),
    (("cases", 0, "decision"), "maybe", 'cases[0].decision: expected one of referable glaucoma, '
                                        'no referable glaucoma, got "maybe"'),
    (("cases", 0, "photo"), None, "cases[0].photo: expected text, got null"),
    (("cases", 0, "photo"), "../session.json", "cases[0].photo: '../session.json' is not a file of this "
                                               "session's cases"),
    (("cases", 0, "photo"), "/etc/passwd", "cases[0].photo: '/etc/passwd' is not a file of this session's cases"),
    (("cases", 0, "photo"), "cases/none.png", "cases[0].photo: missing image cases/none.png"),
    (("cases", 0, "photo"), "cases", "cases[0].photo: 'cases' is not a file of this session's cases"),
    (("cases", 0, "findings"), "none", 'cases[0].findings: expected a list, got "none"'),
    (("cases", 0, "findings", 0, "probability"), 2, "cases[0].findings[0].probability: expected a number in "
                                                    "[0, 1], got 2"),
    (("cases", 0, "findings", 0, "code"), None, "cases[0].findings[0].code: expected text, got null"),
    (("cases", 0, "findings", 0, "contribution"), DELETE, "cases[0].findings[0].contribution: missing"),
    (("cases", 0, "vcdr"), 1.5, "cases[0].vcdr: expected a number in [0, 1], got 1.5"),
    (("cases", 0, "vcdr_contribution"), "x", 'cases[0].vcdr_contribution: expected a number, got "x"'),
    (("cases", 0, "bias"), None, "cases[0].bias: expected a number, got null"),
    (("cases", 0, "unexplained"), [], "cases[0].unexplained: expected a number, got []"),
    (("cases", 0, "explained_share"), 2, "cases[0].explained_share: expected a number in [0, 1], got 2"),
    (("cases", 0, "contributions_exact"), "yes", 'cases[0].contributions_exact: expected true or false, got "yes"'),
    (("cases", 0, "contributions_exact"), 1, "cases[0].contributions_exact: expected true or false, got 1"),
    (("cases", 0, "sentence"), None, "cases[0].sentence: expected text, got null"),
    (("cases", 0, "quality"), "blur", 'cases[0].quality: expected a list, got "blur"'),
    (("cases", 0, "quality"), [1], "cases[0].quality[0]: expected text, got 1"),
    (("cases", 0, "concepts"), "x", 'cases[0].concepts: expected a list or null, got "x"'),
    (("cases", 0, "concepts"), [0.1], "cases[0].concepts: expected one value per bottleneck concept (11), got 1"),
    (("cases", 0, "concepts", 3), "a", 'cases[0].concepts[3]: expected a number, got "a"'),
    (("cases", 0, "truth"), "yes", 'cases[0].truth: expected an object or null, got "yes"'),
    (("cases", 0, "truth", "label"), 2, "cases[0].truth.label: expected one of 0, 1, null, got 2"),
    (("cases", 0, "truth", "label"), True, "cases[0].truth.label: expected one of 0, 1, null, got true"),
    (("cases", 0, "truth", "findings"), "LC", 'cases[0].truth.findings: expected a list, got "LC"'),
    (("cases", 0, "panels"), [], "cases[0].panels: expected an object, got []"),
    (("cases", 0, "panels", "gradcam"), 5, "cases[0].panels.gradcam: expected an object, got 5"),
    (("cases", 0, "panels", "gradcam", "kind"), "map", 'cases[0].panels.gradcam.kind: expected one of saliency, '
                                                       'counterfactual, got "map"'),
    (("cases", 0, "panels", "gradcam", "overlay"), None, "cases[0].panels.gradcam.overlay: expected text, got null"),
    (("cases", 0, "panels", "gradcam", "heatmap"), "cases/case-001/none.png", "cases[0].panels.gradcam.heatmap: "
                                                                               "missing image cases/case-001/none.png"),
    (("cases", 0, "panels", "gradcam", "scale"), "inferno", 'cases[0].panels.gradcam.scale: expected an object, '
                                                            'got "inferno"'),
    (("cases", 0, "panels", "gradcam", "scale", "high"), -1, "cases[0].panels.gradcam.scale.high: expected a "
                                                             "number ≥ 0, got -1"),
    (("cases", 0, "panels", "gradcam", "scale", "label"), DELETE, "cases[0].panels.gradcam.scale.label: missing"),
    (("cases", 0, "panels", "gradcam", "automatic"), [], "cases[0].panels.gradcam.automatic: expected an object, "
                                                         "got []"),
    (("cases", 0, "panels", "gradcam", "automatic", "energy_in_truth"), "high",
     'cases[0].panels.gradcam.automatic.energy_in_truth: expected a number, got "high"'),
    (("cases", 0, "panels", "rise"), "copy of gradcam", 'cases[0].panels.rise: panel of unknown method "rise" '
                                                        '(not in methods)'),
    (("cases", 0, "panels", "adversarial", "edits", "sideways"), "copy of toward_normal",
     'cases[0].panels.adversarial.edits.sideways: expected one of toward_normal, toward_glaucoma, got "sideways"'),
    (("cases", 0, "panels", "adversarial", "edits"), None, "cases[0].panels.adversarial.edits: expected an object, "
                                                           "got null"),
]
EDIT_SCHEMA = [  # (field of cases[0]'s toward_normal edit, new value, what it must be)
    ("steps", -1, "an integer ≥ 0, got -1"), ("steps", 1.5, "an integer ≥ 0, got 1.5"),
    ("reached", "yes", 'true or false, got "yes"'), ("reached", None, "true or false, got null"),
    ("flag", "odd", 'one of null, not edited, too small to see, no flip within the budget, got "odd"'),
    ("goal", 2, "a number in [0, 1], got 2"), ("probability_to", None, "a number in [0, 1], got null"),
    ("probability_from", "0.3", 'a number in [0, 1], got "0.3"'), ("findings_to", "x", 'a list or null, got "x"'),
    ("vcdr_to", -1, "a number in [0, 1] or null, got -1"), ("difference_scale", 5, "an object or null, got 5"),
    ("changed_fraction", 1.5, "a number in [0, 1], got 1.5"), ("max_change", None, "a number in [0, 1], got null"),
    ("image", 5, "text or null, got 5"), ("difference", False, "text or null, got false"),
]
SCHEMA += [(("cases", 0, "panels", "adversarial", "edits", "toward_normal", field), value,
            f"cases[0].panels.adversarial.edits.toward_normal.{field}: expected {expected}")
           for field, value, expected in EDIT_SCHEMA]
SCHEMA += [
    (("cases", 0, "panels", "adversarial", "edits", "toward_normal", "findings_to"), [2.0],
     "cases[0].panels.adversarial.edits.toward_normal.findings_to[0]: expected a number in [0, 1], got 2.0"),
    (("cases", 0, "panels", "adversarial", "edits", "toward_glaucoma", "difference_scale", "gain"), 0,
     "cases[0].panels.adversarial.edits.toward_glaucoma.difference_scale.gain: expected a number > 0, got 0"),
    (("skipped",), "none", 'skipped: expected a list, got "none"'),
    (("skipped",), [{"path": 1, "reason": "x"}], "skipped[0].path: expected text, got 1"),
]


def edited(session: dict, where: tuple, value) -> dict:
    """``session`` with the value at ``where`` replaced (or removed, :data:`DELETE`); ``"copy of X"``
    puts a copy of the sibling ``X`` there."""
    session = copy.deepcopy(session)
    *parents, last = where
    holder = session
    for key in parents:
        holder = holder[key]
    if value is DELETE:
        del holder[last]
    elif isinstance(holder, list) and last == len(holder):
        holder.append(copy.deepcopy(holder[int(value.removeprefix("copy of "))]))
    elif isinstance(value, str) and value.startswith("copy of "):
        holder[last] = copy.deepcopy(holder[value.removeprefix("copy of ")])
    else:
        holder[last] = value
    return session


@pytest.mark.parametrize("where, value, message", SCHEMA, ids=[".".join(map(str, w)) + f"={v!r}"[:40]
                                                               for w, v, _ in SCHEMA])
def test_a_hand_edited_session_is_refused_naming_the_field(session, tmp_path, where, value, message):
    folder = copied(session, tmp_path)
    path = folder / SESSION_FILE
    path.write_text(json.dumps(edited(json.loads(path.read_text()), where, value)))
    with pytest.raises(PathError) as raised:
        load_session(folder)
    assert str(raised.value) == f"{path}: {message}"
    with pytest.raises(PathError):
        create_app(folder)
    assert not (folder / STORE_FILE).exists()  # nothing is written beside a refused session


UNREADABLE = {
    "nested 100000 deep": (b'{"cases": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    "an integer of 5000 digits": (b'{"seed": ' + DIGITS.encode() + b"}", "holds an integer of 5000 digits"),
    "NaN": (b'{"threshold": NaN}', "NaN is not a JSON number"),
    "Infinity": (b'{"threshold": Infinity}', "Infinity is not a JSON number"),
    "a lone surrogate": (b'{"title": "\\ud800"}', "holds a lone surrogate '\\ud800'"),
    "bytes that are not UTF-8": (b'{"title": "\xff"}', "not UTF-8 text"),
    "an empty file": (b"", "Expecting value at line 1, column 1"),
    "truncated": (b'{"format": 1, "cases": [', "Expecting value at line 1, column 25"),
}


@pytest.mark.parametrize("text, reason", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_a_session_file_that_is_no_json_is_refused_in_one_line(session, tmp_path, capsys, text, reason):
    folder = copied(session, tmp_path)
    (folder / SESSION_FILE).write_bytes(text)
    with pytest.raises(PathError, match="is not valid JSON: ") as raised:
        load_session(folder)
    assert reason in str(raised.value)
    assert reason in failed(["reader", str(folder), "ana"], capsys)
    assert not (folder / STORE_FILE).exists()


@pytest.mark.parametrize("text, message", [("null", "the top level: expected an object, got null"),
                                           ("[]", "the top level: expected an object, got []"),
                                           ('"session"', 'the top level: expected an object, got "session"')])
def test_a_session_file_that_is_no_object_is_refused(session, tmp_path, text, message):
    folder = copied(session, tmp_path)
    (folder / SESSION_FILE).write_text(text)
    with pytest.raises(PathError, match=re.escape(message)):
        load_session(folder)


def test_the_schema_knows_the_flags_and_edits_a_session_is_written_with():
    from xmed.review.panels import FLAGS

    hints = get_type_hints(CounterfactualPanel)["edits"], get_type_hints(EditEntry)["flag"]
    assert set(get_args(get_args(hints[0])[0])) == set(EDITS) and set(get_args(hints[1])) == {None, *FLAGS}


@pytest.mark.parametrize("mode", ["blinded", "open"])
@pytest.mark.parametrize("bottleneck", [True, False])
def test_synthetic_sessions_keep_to_the_schema(tmp_path, mode, bottleneck):
    folder = synthetic_session(tmp_path, n_cases=3, mode=mode, bottleneck=bottleneck, size=32)
    assert len(load_session(folder)["cases"]) == 3


@pytest.mark.parametrize("change, message", [
    ({"threshold": 1.5}, "threshold: expected a number > 0 and < 1, got 1.5"),
    ({"seed": -3}, "seed: expected an integer ≥ 0, got -3"),
    ({"methods": []}, "methods: expected a non-empty list, got []"),
    ({"title": None}, "title: expected text, got null"),
])
def test_write_session_refuses_what_load_session_would(session, tmp_path, change, message):
    written = load_session(session)
    arguments = {"title": "t", "mode": "open", "seed": 0, "threshold": 0.5, "model": written["model"],
                 "methods": written["methods"], "cases": written["cases"], "bottleneck": written["bottleneck"]}
    folder = copied(session, tmp_path)
    (folder / SESSION_FILE).unlink()
    with pytest.raises(InputError) as raised:
        write_session(folder, **{**arguments, **change})
    assert raised.value.reason == message and not (folder / SESSION_FILE).exists()


# -- symbolic link loops when a session is opened -------------------------------------------------


@pytest.mark.parametrize("kind", ["self", "pair"])
def test_an_image_that_is_a_link_loop_is_named_when_the_session_opens(session, tmp_path, capsys, kind):
    folder = copied(session, tmp_path)
    relative = load_session(folder)["cases"][1]["panels"]["gradcam"]["overlay"]
    target = folder / relative
    target.unlink()
    target.symlink_to(target.name if kind == "self" else "other.png")
    if kind == "pair":
        target.with_name("other.png").symlink_to(target.name)
    message = f"cases[1].panels.gradcam.overlay: '{relative}' is a symbolic link loop"
    with pytest.raises(PathError, match=re.escape(message)):
        create_app(folder)
    assert message in failed(["serve", str(folder)], capsys)
    assert not (folder / STORE_FILE).exists()


def test_a_loop_elsewhere_in_the_cases_folder_is_left_alone(session, tmp_path):
    folder = copied(session, tmp_path)
    (folder / "cases" / "loop").symlink_to("loop")
    assert len(load_session(folder)["cases"]) == 2


# -- serve: the wildcard address and the port ------------------------------------------------------

WILDCARDS = ["0", "0.0.0.0", "::", "::0", "0:0:0:0:0:0:0:0", " 0.0.0.0 ", "\t::\n", "[::]", " [::0] ", "0x0",
             "0.0", "0.0.0", "000.000.000.000", "00", "0000::", "::ffff:0.0.0.0", "::%eth0", "", "   "]


@pytest.fixture
def uvicorn_runs(monkeypatch):
    import uvicorn

    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: started.append(options))
    return started


@pytest.mark.parametrize("allow_remote, rule", [(False, "loopback"), (True, "wildcard")])
@pytest.mark.parametrize("host", WILDCARDS, ids=[repr(h) for h in WILDCARDS])
def test_every_spelling_of_the_wildcard_address_is_refused(session, uvicorn_runs, host, allow_remote, rule):
    with pytest.raises(ConfigError, match=rule) as raised:
        serve(session, host=host, allow_remote=allow_remote)
    assert raised.value.key == "host" and uvicorn_runs == []


@pytest.mark.parametrize("host", ["0", "::", "0:0:0:0:0:0:0:0", " 0.0.0.0"])
def test_the_command_refuses_the_wildcard_address_in_one_line(session, uvicorn_runs, capsys, host):
    assert "wildcard" in failed(["serve", str(session), "--host", host, "--allow-remote"], capsys)
    assert "loopback" in failed(["serve", str(session), "--host", host], capsys)
    assert uvicorn_runs == []


def test_a_named_address_with_spaces_is_served_as_the_address(session, tmp_path, uvicorn_runs):
    folder = copied(session, tmp_path)
    serve(folder, host=" 127.0.0.1 ")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        serve(folder, host=" 192.168.1.20\n", allow_remote=True)
    assert [options["host"] for options in uvicorn_runs] == ["127.0.0.1", "192.168.1.20"]


BAD_PORTS = ["0", "-1", "65536", "99999", "abc", "", "1.5", "8e3", "0x50", DIGITS]


@pytest.mark.parametrize("port", BAD_PORTS, ids=[p[:8] or "empty" for p in BAD_PORTS])
def test_a_port_out_of_range_is_refused_by_the_command_line(session, uvicorn_runs, capsys, port):
    with pytest.raises(SystemExit) as raised:
        main(["serve", str(session), f"--port={port}"])
    assert raised.value.code == 2 and uvicorn_runs == []
    assert "argument --port: expected an integer from 1 to 65535" in capsys.readouterr().err
    assert not (session / STORE_FILE).exists() and not (session / ADDRESS_FILE).exists()


def test_a_reader_link_takes_no_port_of_its_own(session, capsys):
    with pytest.raises(SystemExit) as raised:
        main(["reader", str(session), "ana", "--port=9001"])  # the port is serve's: one source of truth
    assert raised.value.code == 2 and "unrecognized arguments: --port=9001" in capsys.readouterr().err
    assert not (session / STORE_FILE).exists()


@pytest.mark.parametrize("record, reason", [
    ("{", "cannot be read: Expecting property name"), ('{"host": "127.0.0.1", "port": 0, "recorded": "x"}',
                                                       "port: expected a port number from 1 to 65535, got 0"),
    ('{"host": "127.0.0.1", "port": "8765", "recorded": "x"}',
     'port: expected a port number from 1 to 65535, got "8765"'),
    ('["127.0.0.1"]', "the top level: expected an object"), ('{"port": 8765, "recorded": "x"}', "host: missing"),
])
def test_a_damaged_address_record_is_named_and_no_reader_added(session, tmp_path, capsys, record, reason):
    folder = copied(session, tmp_path)
    (folder / ADDRESS_FILE).write_text(record)
    assert f"{folder / ADDRESS_FILE}: {reason}" in failed(["reader", str(folder), "ana"], capsys)
    assert RatingStore(folder / STORE_FILE).readers() == []


@pytest.mark.parametrize("port", [0, -1, 65536, True, "8765"])
def test_serve_refuses_a_port_out_of_range(session, uvicorn_runs, port):
    with pytest.raises(ConfigError, match="port number from 1 to 65535"):
        serve(session, port=port)
    assert uvicorn_runs == []


# -- analyse ---------------------------------------------------------------------------------------


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def test_analyse_names_a_ratings_file_it_cannot_read(session, tmp_path, capsys):
    missing = tmp_path / "missing.csv"
    assert f"{missing}: cannot read the ratings table (No such file or directory)" in failed(
        ["analyse", str(session), "--ratings", str(missing)], capsys)
    for not_a_file in (tmp_path, Path("/dev/zero"), fifo(tmp_path / "ratings_pipe.csv")):  # none may block
        assert f"{not_a_file}: is not a file (give the ratings CSV an export wrote)" in failed(
            ["analyse", str(session), "--ratings", str(not_a_file)], capsys)
    binary = tmp_path / "ratings.csv"
    binary.write_bytes(b"reader,case,method\n\xff\xfe\x00")
    assert f"{binary}: is not a CSV ratings table: 'utf-8' codec" in failed(
        ["analyse", str(session), "--ratings", str(binary)], capsys)


def test_analyse_writes_only_into_a_folder_of_its_own(session, tmp_path, capsys):
    assert "/: holds files that are not from an earlier analysis" in failed(
        ["analyse", str(session), "--out", "/"], capsys)
    assert not Path("/analysis.json").exists() and not Path("/scores.png").exists()
    (tmp_path / "notes.txt").write_text("keep")
    assert "holds files that are not from an earlier analysis (notes.txt)" in failed(
        ["analyse", str(session), "--out", str(tmp_path)], capsys)
    assert "is a file; give a folder for the analysis" in failed(
        ["analyse", str(session), "--out", str(tmp_path / "notes.txt")], capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("count", ["100001", "1000000000", "99", "0", "lots", DIGITS])
def test_analyse_refuses_a_bootstrap_beyond_its_bound(session, capsys, count):
    with pytest.raises(SystemExit) as raised:
        main(["analyse", str(session), f"--bootstrap={count}"])
    assert raised.value.code == 2
    assert "argument --bootstrap: expected an integer from 100 to 100000" in capsys.readouterr().err


def test_the_analysis_refuses_a_bootstrap_beyond_its_bound():
    ratings = [Rating("r1", "eye1", "gradcam", 3, 3, 1)]
    with pytest.raises(InputError, match="n_bootstrap: must be an integer from 1 to 100000, got 1000000000"):
        analyse(ratings, n_bootstrap=10 ** 9)


# -- export while the server writes ---------------------------------------------------------------

HOLD_THE_WRITE_LOCK = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
db.execute("INSERT INTO case_ratings (reader, case_id, agree, updated) VALUES ('ana', 'case-002', 0, 'now')")
print("locked", flush=True)
time.sleep(120)
"""


def test_export_reads_the_ratings_while_another_process_writes(session, tmp_path, capsys):
    folder = copied(session, tmp_path)
    store = RatingStore(folder / STORE_FILE)
    store.add_reader("ana")
    store.save_panel_rating("ana", "case-001", "gradcam", panel="A", mode="blinded", location=-1 + 5)
    store.save_case_rating("ana", "case-001", agree=1, note="=1+1")
    writer = subprocess.Popen([sys.executable, "-c", HOLD_THE_WRITE_LOCK, str(folder / STORE_FILE)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "locked\n"
        started = time.monotonic()
        assert main(["export", str(folder), "--out", str(tmp_path / "export")]) == 0
        took = time.monotonic() - started
    finally:
        writer.kill()
        writer.wait()
    assert took < 10  # not the 30 s wait on a lock that ends in "database is locked"
    with open(tmp_path / "export" / "ratings.csv", newline="") as handle:
        exported = handle.read()
    assert exported == ratings_csv(store.rows())  # the function the live download uses
    assert [(row["case"], row["location"], row["note"]) for row in csv.DictReader(io.StringIO(exported))] == [
        ("case-001", "4", "'=1+1")]  # the other process's uncommitted rating is not there


# -- readers ---------------------------------------------------------------------------------------


def test_readers_are_listed_and_revoked(session, tmp_path, capsys):
    folder = copied(session, tmp_path)
    assert main(["readers", "list", str(folder)]) == 0
    assert "no readers yet" in capsys.readouterr().out and not (folder / STORE_FILE).exists()
    assert main(["reader", str(folder), "Ｄｒ Ana"]) == 0 and main(["reader", str(folder), "ben"]) == 0
    token = capsys.readouterr().out.split("token=")[-1].strip()
    RatingStore(folder / STORE_FILE).save_case_rating("ben", "case-002", agree=1)
    assert main(["readers", "list", str(folder)]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [(line[0], line[1], line[3]) for line in lines[:-1]] == [
        ("Dr Ana", "can sign in", "0/2 cases rated (0 started)"), ("ben", "can sign in", "0/2 cases rated (1 started)")]
    assert lines[-1] == ["study not locked"]
    assert main(["readers", "revoke", str(folder), "BEN"]) == 0
    assert "reader 'ben' revoked" in capsys.readouterr().out
    assert main(["readers", "list", str(folder)]) == 0
    assert capsys.readouterr().out.splitlines()[1].split("\t")[1].startswith("revoked 20")
    store = RatingStore(folder / STORE_FILE)
    assert store.reader_for(token) is None and [row["reader"] for row in store.rows()] == ["ben"]
    assert "no reader 'zed'" in failed(["readers", "revoke", str(folder), "zed"], capsys)
    assert main(["reader", str(folder), "Dr Ana"]) == 2
    assert "reader 'Dr Ana' already exists" in capsys.readouterr().err


def test_a_store_of_the_first_format_is_upgraded_and_its_readers_kept(tmp_path):
    path = tmp_path / STORE_FILE
    with sqlite3.connect(path) as db:
        db.executescript("PRAGMA journal_mode=WAL; CREATE TABLE readers (name TEXT PRIMARY KEY, token_sha256 TEXT "
                         "NOT NULL UNIQUE, created TEXT NOT NULL); INSERT INTO readers VALUES ('ana', "
                         "'2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b', 'then'); "
                         "PRAGMA user_version = 1;")
    store = RatingStore(path)
    assert store.reader_for("secret") == "ana"  # the digest above is sha256("secret")
    store.revoke_reader("ana")
    assert store.reader_for("secret") is None


LOOKALIKES = [  # (registered, new, why refused)
    ("Ana", "Ana", "already exists"), ("Ana", "ana", "looks the same"), ("Ana", "ANA", "looks the same"),
    ("Ana Silva", "Ana  Silva", "looks the same"), ("Ana Silva", "Ana\u00a0Silva", "already exists"),
    ("Ana Silva", "Ana\u2003Silva", "already exists"), ("Ana Silva", "ana\u3000silva", "looks the same"),
    ("Ａｎａ", "Ana", "already exists"), ("Ａｎａ", "ana", "looks the same"), ("fiona", "ﬁona", "already exists"),
    ("Straße", "STRASSE", "looks the same"), ("José", "Jose\u0301", "already exists"),
    ("José", "JOSE\u0301", "looks the same"), ("Dr. Ana", "DR. ANA", "looks the same"),
    ("ǅ", "Ǆ", "looks the same"), ("Ⅻ", "XII", "already exists"), ("ana²", "ana2", "already exists"),
]


@pytest.mark.parametrize("registered, new, why", LOOKALIKES)
def test_a_reader_name_that_looks_the_same_as_another_is_refused(tmp_path, registered, new, why):
    store = RatingStore(tmp_path / STORE_FILE)
    store.add_reader(registered)
    with pytest.raises(InputError, match=why) as raised:
        store.add_reader(new)
    assert raised.value.name == "name" and len(store.readers()) == 1


@pytest.mark.parametrize("given, stored", [("Ｄｒ Ａｎａ", "Dr Ana"), ("ﬁona", "fiona"), ("Ana\u00a0Silva", "Ana Silva"),
                                           ("Jose\u0301", "José"), ("Ana", "Ana"), ("Ⅻ", "XII")])
def test_reader_names_are_stored_nfkc_normalised(tmp_path, given, stored):
    store = RatingStore(tmp_path / STORE_FILE)
    token = store.add_reader(given)
    assert store.readers() == [stored] and store.reader_for(token) == stored
    store.add_reader(stored + " B")  # a name that differs is welcome


@pytest.mark.parametrize("name", ["", " ana", "ana ", "a\tb", "a\u200bb", "\ud800", "x" * 101, None, 5, "Ana\u3000"])
def test_a_reader_name_that_is_not_plain_text_is_refused(tmp_path, name):
    with pytest.raises(InputError) as raised:
        RatingStore(tmp_path / STORE_FILE).add_reader(name)
    assert raised.value.name == "name"


def test_a_note_holding_a_lone_surrogate_is_refused_and_nothing_stored(tmp_path):
    store = RatingStore(tmp_path / STORE_FILE)
    store.add_reader("ana")
    with pytest.raises(InputError, match="note: holds a lone surrogate"):
        store.save_case_rating("ana", "case-001", agree=1, note="tilted \ud800 disc")
    assert store.rows() == []


# -- CSV cells a spreadsheet would run ------------------------------------------------------------

FORMULAS = ["=1+1", "=cmd|' /C calc'!A0", "+1", "+SUM(A1:A2)", "-1", "-2+3", "@SUM(1)", "\t=1", "\r=1", "\r\n=1",
            '=HYPERLINK("http://evil.example","x")']


@pytest.mark.parametrize("column", ["reader", "case", "method", "note", "panel", "mode"])
@pytest.mark.parametrize("text", FORMULAS, ids=[repr(f) for f in FORMULAS])
def test_a_text_cell_is_never_a_formula(column, text):
    row = {"reader": "ana", "case": "case-001", "method": "gradcam", "location": 4, "agree": 0, column: text}
    (cell,) = csv.DictReader(io.StringIO(ratings_csv([row]), newline=""))
    assert cell[column] == "'" + text and (cell["location"], cell["agree"]) == ("4", "0")


@pytest.mark.parametrize("value, cell", [(-1, "-1"), (-2.5, "-2.5"), (0, "0"), (None, ""), ("a=b", "a=b"),
                                         ("disc tilted", "disc tilted"), ("'=kept", "'=kept"), ("1-2", "1-2"),
                                         (" =x", " =x")])
def test_numbers_and_plain_text_stay_as_they_are(value, cell):
    (row,) = csv.DictReader(io.StringIO(ratings_csv([{"reader": "ana", "location": value, "note": value}]),
                                        newline=""))
    assert row["location"] == row["note"] == cell
