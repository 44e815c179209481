"""The ratings of a review session, kept in one SQLite file (``<session>/ratings.sqlite``).

Readers are known by name (stored NFKC-normalised; a name that looks the same as another one, in
case, width or spacing, is refused); each holds a secret token (their login link) of which only the
SHA-256 digest is stored. Revoking a reader (:meth:`RatingStore.revoke_reader`) ends their sign-in
at once and keeps their ratings; a new token (:meth:`RatingStore.renew_token`) replaces a lost one.
A reader rates each panel of a case (``location`` and ``rationale``, 1-5) and the case as a whole
(``agree`` with the model's decision, 0/1, and a free-text ``note``). Every save returns only after
its transaction is committed to disk (write-ahead log, ``synchronous=FULL``), so a rating the page
shows as saved survives a crash of the server or of the machine. Once the study's coordinator
locks it (:meth:`RatingStore.lock`), no rating changes any more (:class:`StudyLocked`); the lock is
checked in the transaction of every save.

:meth:`RatingStore.rows` gives one row per (reader, case, method) in the columns
:func:`xmed.review.analysis.read_ratings` reads, plus ``note``, ``panel`` (the letter the reader
saw), ``mode`` (blinded or open) and ``updated``; the CSV export (:func:`ratings_csv`) writes no
cell a spreadsheet would run as a formula (:func:`spreadsheet_safe`). :func:`letters_only` is what a
blinded reader may download before the lock: the letters they saw, never the methods behind them.

Example:
    >>> import tempfile
    >>> store = RatingStore(Path(tempfile.mkdtemp()) / "ratings.sqlite")
    >>> token = store.add_reader("ana")
    >>> store.reader_for(token), store.reader_for("not-a-token")
    ('ana', None)
    >>> store.save_panel_rating("ana", "case-001", "gradcam", panel="B", mode="blinded", location=4)
    >>> store.save_case_rating("ana", "case-001", agree=1)
    >>> [(row["method"], row["location"], row["rationale"], row["agree"]) for row in store.rows()]
    [('gradcam', 4, None, 1)]
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import hmac
import io
import json
import os
import secrets
import sqlite3
import unicodedata
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Collection, Iterator, Mapping, Sequence

from xmed.errors import InputError, PathError, XmedError
from xmed.review.session import MODES, shown

__all__ = ["RatingStore", "StudyLocked", "COLUMNS", "LETTER_COLUMNS", "STORE_FILE", "NOTE_LIMIT", "ratings_csv",
           "ratings_json", "letters_only", "reader_name", "spreadsheet_safe"]

STORE_FILE = "ratings.sqlite"
#: the columns of :meth:`RatingStore.rows` and of the exports, in order
COLUMNS = ("reader", "case", "method", "location", "rationale", "agree", "note", "panel", "mode", "updated")
#: the columns of :func:`letters_only`: no method
LETTER_COLUMNS = tuple(column for column in COLUMNS if column != "method")
NOTE_LIMIT = 5000
NAME_LIMIT = 100
ID_LIMIT = 200
SCHEMA_VERSION = 3
_KEEP = object()  # a score not given to save_panel_rating: keep what is stored
#: the first characters that make a spreadsheet read a cell as a formula (OWASP, "CSV injection")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

_TABLES = ("""
CREATE TABLE IF NOT EXISTS readers (
    name TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL,
    revoked TEXT
)""", """
CREATE TABLE IF NOT EXISTS panel_ratings (
    reader TEXT NOT NULL REFERENCES readers(name),
    case_id TEXT NOT NULL,
    method TEXT NOT NULL,
    panel TEXT,
    mode TEXT NOT NULL,
    location INTEGER CHECK (location BETWEEN 1 AND 5),
    rationale INTEGER CHECK (rationale BETWEEN 1 AND 5),
    updated TEXT NOT NULL,
    PRIMARY KEY (reader, case_id, method)
)""", """
CREATE TABLE IF NOT EXISTS case_ratings (
    reader TEXT NOT NULL REFERENCES readers(name),
    case_id TEXT NOT NULL,
    agree INTEGER CHECK (agree IN (0, 1)),
    note TEXT CHECK (length(note) <= 5000),
    updated TEXT NOT NULL,
    PRIMARY KEY (reader, case_id)
)""", """
CREATE TABLE IF NOT EXISTS study_lock (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    locked TEXT NOT NULL
)""")
#: what brings a file of each older format up to :data:`SCHEMA_VERSION` (0: a new file), besides
#: the tables of :data:`_TABLES` it lacks
_UPGRADES = {0: (), 1: ("ALTER TABLE readers ADD COLUMN revoked TEXT",), 2: ()}


class StudyLocked(XmedError):
    """A rating sent after the study's coordinator locked it (``xmed-review lock``); ``locked`` is when.

    Example:
        >>> str(StudyLocked("2025-03-01T10:00:00.000+00:00"))
        'the study was locked by its coordinator on 2025-03-01 10:00 UTC: ratings can no longer change'
    """

    def __init__(self, locked: str):
        self.locked = locked
        super().__init__(f"the study was locked by its coordinator on {locked[:10]} {locked[11:16]} UTC: "
                         "ratings can no longer change")

    def __reduce__(self):
        return (type(self), (self.locked,))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _name(field: str, value: Any, limit: int) -> str:
    """A reader name, case id or method: a non-empty printable string without surrounding spaces."""
    if not isinstance(value, str) or not value or value.strip() != value or not value.isprintable():
        raise InputError(field, f"must be a non-empty printable text without leading or trailing spaces, got {value!r}")
    if len(value) > limit:
        raise InputError(field, f"is {len(value)} characters long; at most {limit}")
    return value


def reader_name(name: Any) -> str:
    """``name`` as a reader is stored: NFKC-normalised (full-width letters, ligatures and
    non-breaking spaces become their plain forms), then checked.

    Example:
        >>> reader_name("Ｄｒ\u00a0Ana")
        'Dr Ana'
    """
    return _name("name", unicodedata.normalize("NFKC", name) if isinstance(name, str) else name, NAME_LIMIT)


def _lookalike(name: str) -> str:
    """What two names that look the same have in common: NFKC, case folded, spaces collapsed.

    Example:
        >>> _lookalike("Dr  ANA ﬁtz") == _lookalike("dr ana fitz")
        True
    """
    return " ".join(unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold()).split())


def _score(field: str, value: Any, allowed: range) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value not in allowed:
        raise InputError(field, f"must be an integer {allowed.start}..{allowed.stop - 1} or null, got {shown(value)}")
    return value


def _note(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or "\x00" in value:
        raise InputError("note", f"must be text, got {type(value).__name__}")
    if not _encodable(value):
        raise InputError("note", "holds a lone surrogate (half of a UTF-16 pair), which is not text")
    if len(value) > NOTE_LIMIT:
        raise InputError("note", f"is {len(value)} characters long; at most {NOTE_LIMIT}")
    return value


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _panel(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and len(value) == 1 and "A" <= value <= "Z"):
        return value
    raise InputError("panel", f"must be a letter A-Z or null, got {value!r}")


class RatingStore:
    """Readers and their ratings in the SQLite file ``path`` (created with its tables if missing).

    Each call opens its own connection, so one store may serve many threads.
    """

    def __init__(self, path: str | os.PathLike, read_only: bool = False):
        self.path, self.read_only = Path(path), read_only
        if not self.path.parent.is_dir():
            raise PathError(self.path, "the folder for the ratings file does not exist")
        if read_only:  # e.g. an export: it never changes a session
            if not self.path.is_file():
                raise PathError(self.path, "no ratings file here")
            return
        try:
            with self.connect() as db:
                mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if mode != "wal":
                    raise PathError(self.path, f"SQLite cannot keep a write-ahead log here (journal mode {mode!r}); "
                                               "put the session on a local disk")
                current = db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            if not current:  # a file of the current format is opened without waiting on its writers
                self._upgrade()
        except sqlite3.DatabaseError as err:
            raise PathError(self.path, f"is not a ratings file SQLite can open: {err}") from None

    def _upgrade(self) -> None:
        """Create the tables of a new file, or bring an older format's up to date."""
        with self._transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise PathError(self.path, f"ratings file format {version} is newer than this xmed "
                                           f"reads ({SCHEMA_VERSION}); update xmed")
            for statement in (*_TABLES, *_UPGRADES[version]):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A new connection with the store's settings (durable commits, foreign keys checked),
        closed when the block ends. Transactions are explicit: ``BEGIN`` … ``COMMIT``."""
        if self.read_only:
            db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30, isolation_level=None)
        else:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            yield db
        finally:
            db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction committed (to disk) when the block ends, rolled back on error."""
        with self.connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # -- readers -------------------------------------------------------------------------------

    def add_reader(self, name: str) -> str:
        """Register reader ``name`` (stored as :func:`reader_name` gives it) and return their new
        secret token (shown once; only its digest is kept). A name already registered, or one that
        looks the same as a registered one (``ana`` beside ``Ana``), raises
        :class:`~xmed.errors.InputError`."""
        name = reader_name(name)
        token = secrets.token_urlsafe(32)
        with self._transaction() as db:
            same = self._registered(db, name)
            if same == name:
                raise InputError("name", f"reader {name!r} already exists in {self.path}; choose another name")
            if same is not None:
                raise InputError("name", f"reader {name!r} looks the same as reader {same!r} of {self.path} "
                                         "(names differing only in case, width or spacing are confused); "
                                         "choose another name")
            db.execute("INSERT INTO readers (name, token_sha256, created) VALUES (?, ?, ?)",
                       (name, _digest(token), _now()))
        return token

    @staticmethod
    def _registered(db: sqlite3.Connection, name: str) -> str | None:
        """The registered name that looks the same as ``name`` (:func:`_lookalike`), or None."""
        wanted = _lookalike(name)
        return next((known for (known,) in db.execute("SELECT name FROM readers") if _lookalike(known) == wanted),
                    None)

    def revoke_reader(self, name: str) -> str:
        """End the sign-in of reader ``name`` now: their link, and the cookie it set, open nothing
        from the next request on; their ratings stay. ``name`` is matched as :meth:`add_reader`
        compares names. Returns the name as stored; an unknown name raises
        :class:`~xmed.errors.InputError`. Revoking twice changes nothing."""
        with self._transaction() as db:
            stored = self._known(db, name)
            db.execute("UPDATE readers SET revoked = ? WHERE name = ? AND revoked IS NULL", (_now(), stored))
        return stored

    def renew_token(self, name: str) -> tuple[str, str]:
        """A new secret token for reader ``name`` (matched as :meth:`revoke_reader` matches),
        replacing their old one, which opens nothing from now on: ``(name as stored, token)``. Only
        digests are kept, so a lost link cannot be shown again, only replaced. An unknown or revoked
        reader raises :class:`~xmed.errors.InputError`.

        Example:
            >>> import tempfile
            >>> store = RatingStore(Path(tempfile.mkdtemp()) / "ratings.sqlite"); old = store.add_reader("ana")
            >>> name, new = store.renew_token("ANA")
            >>> name, store.reader_for(new), store.reader_for(old)
            ('ana', 'ana', None)
        """
        token = secrets.token_urlsafe(32)
        with self._transaction() as db:
            stored = self._known(db, name)
            revoked = db.execute("SELECT revoked FROM readers WHERE name = ?", (stored,)).fetchone()[0]
            if revoked is not None:
                raise InputError("name", f"the sign-in of {stored!r} was revoked on {revoked[:16]}; a revoked "
                                         "reader gets no new link (add them under another name)")
            db.execute("UPDATE readers SET token_sha256 = ? WHERE name = ?", (_digest(token), stored))
        return stored, token

    def _known(self, db: sqlite3.Connection, name: str) -> str:
        """The registered name ``name`` stands for (:meth:`_registered`); InputError when none."""
        stored = self._registered(db, reader_name(name))
        if stored is None:
            raise InputError("name", f"no reader {name!r} in {self.path}; `xmed-review readers list` names them")
        return stored

    def readers(self) -> list[str]:
        """The names of the registered readers (revoked ones too), sorted."""
        with self.connect() as db:
            return [name for (name,) in db.execute("SELECT name FROM readers ORDER BY name")]

    def reader_list(self) -> list[dict[str, Any]]:
        """Each reader, sorted by name: ``name``, ``created``, ``revoked`` (when, or None) and
        ``cases`` (how many cases they stored anything for).

        Example:
            >>> import tempfile
            >>> store = RatingStore(Path(tempfile.mkdtemp()) / "ratings.sqlite"); _ = store.add_reader("ana")
            >>> store.save_case_rating("ana", "c1", agree=1); _ = store.revoke_reader("ANA")
            >>> [(r["name"], r["cases"], r["revoked"] is not None) for r in store.reader_list()]
            [('ana', 1, True)]
        """
        with self.connect() as db:
            readers = db.execute("SELECT name, created, revoked FROM readers ORDER BY name").fetchall()
            cases = dict(db.execute("SELECT reader, count(DISTINCT case_id) FROM (SELECT reader, case_id FROM "
                                    "panel_ratings UNION SELECT reader, case_id FROM case_ratings) GROUP BY reader"))
        return [{"name": name, "created": created, "revoked": revoked, "cases": cases.get(name, 0)}
                for name, created, revoked in readers]

    def reader_for(self, token: Any) -> str | None:
        """The name of the reader holding ``token``, or None for an unknown, malformed or revoked token."""
        if not isinstance(token, str) or not 0 < len(token) <= 200:
            return None
        wanted = _digest(token)
        with self.connect() as db:
            known = db.execute("SELECT name, token_sha256 FROM readers WHERE revoked IS NULL").fetchall()
        found = None
        for name, digest in known:  # every digest is compared, so the time taken says nothing
            if hmac.compare_digest(digest, wanted):
                found = name
        return found

    def _check_reader(self, db: sqlite3.Connection, reader: str) -> None:
        _name("reader", reader, NAME_LIMIT)
        found = db.execute("SELECT revoked FROM readers WHERE name = ?", (reader,)).fetchone()
        if found is None:
            raise InputError("reader", f"{reader!r} is not a registered reader of {self.path}")
        if found[0] is not None:
            raise InputError("reader", f"the sign-in of {reader!r} was revoked on {found[0]}")

    # -- the lock ------------------------------------------------------------------------------

    def lock(self) -> str:
        """Lock the study: from now on every save raises :class:`StudyLocked`. Returns when it was
        locked (the first lock's time, when it already was).

        Example:
            >>> import tempfile
            >>> store = RatingStore(Path(tempfile.mkdtemp()) / "ratings.sqlite"); _ = store.add_reader("ana")
            >>> store.locked() is None, store.lock() == store.lock() == store.locked()
            (True, True)
            >>> store.save_case_rating("ana", "c1", agree=1)
            Traceback (most recent call last):
            ...
            xmed.review.store.StudyLocked: the study was locked by its coordinator on ...
        """
        with self._transaction() as db:
            db.execute("INSERT OR IGNORE INTO study_lock (id, locked) VALUES (1, ?)", (_now(),))
            return db.execute("SELECT locked FROM study_lock").fetchone()[0]

    def locked(self) -> str | None:
        """When the study was locked (ISO time), or None while ratings may change."""
        with self.connect() as db:
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'study_lock'").fetchone() is None:
                return None  # a file of a format before locks, opened read-only
            found = db.execute("SELECT locked FROM study_lock").fetchone()
        return found and found[0]

    # -- ratings -------------------------------------------------------------------------------

    def save_panel_rating(self, reader: str, case: str, method: str, *, panel: str | None, mode: str,
                          location: Any = _KEEP, rationale: Any = _KEEP) -> None:
        """Store ``reader``'s rating of ``method``'s panel on ``case``; returns once committed.

        A score left out keeps its stored value; ``None`` clears it. ``panel`` is the letter the
        reader saw, ``mode`` the session's (``"blinded"`` or ``"open"``).
        """
        _name("case", case, ID_LIMIT)
        _name("method", method, ID_LIMIT)
        _panel(panel)
        if mode not in MODES:
            raise InputError("mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
        scores = {field: _score(field, value, range(1, 6))
                  for field, value in (("location", location), ("rationale", rationale)) if value is not _KEEP}
        if not scores:
            raise InputError("location", "give a location or a rationale score (or both)")
        self._upsert("panel_ratings", {"reader": reader, "case_id": case, "method": method},
                     {"panel": panel, "mode": mode, **scores})

    def save_case_rating(self, reader: str, case: str, *, agree: Any = _KEEP, note: Any = _KEEP) -> None:
        """Store whether ``reader`` agrees with the model's decision on ``case`` (1, 0 or None) and
        their note (text up to :data:`NOTE_LIMIT` characters, or None); a field left out keeps its
        stored value. Returns once committed."""
        _name("case", case, ID_LIMIT)
        fields = {}
        if agree is not _KEEP:
            fields["agree"] = _score("agree", agree, range(0, 2))
        if note is not _KEEP:
            fields["note"] = _note(note)
        if not fields:
            raise InputError("agree", "give agree or a note (or both)")
        self._upsert("case_ratings", {"reader": reader, "case_id": case}, fields)

    def _upsert(self, table: str, key: Mapping[str, Any], values: Mapping[str, Any]) -> None:
        """Insert one row of ``table`` (``key`` columns, then ``values`` columns and the time), or
        replace the ``values`` columns of the row ``key`` names; committed when it returns."""
        columns = [*key, *values, "updated"]
        updates = ", ".join(f"{column} = excluded.{column}" for column in [*values, "updated"])
        with self._transaction() as db:
            self._check_reader(db, key["reader"])
            locked = db.execute("SELECT locked FROM study_lock").fetchone()
            if locked is not None:  # checked in the save's own transaction: no save slips past a lock
                raise StudyLocked(locked[0])
            db.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
                       f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}",
                       (*key.values(), *values.values(), _now()))

    def case_ratings(self, reader: str, case: str) -> dict[str, Any]:
        """What ``reader`` stored for ``case``: ``{"panels": {method: {"location", "rationale"}},
        "agree", "note"}`` (None where nothing is stored)."""
        with self.connect() as db:
            panels = db.execute("SELECT method, location, rationale FROM panel_ratings WHERE reader = ? AND case_id = ?",
                                (reader, case)).fetchall()
            verdict = db.execute("SELECT agree, note FROM case_ratings WHERE reader = ? AND case_id = ?",
                                 (reader, case)).fetchone() or (None, None)
        return {"panels": {method: {"location": location, "rationale": rationale}
                           for method, location, rationale in panels},
                "agree": verdict[0], "note": verdict[1]}

    def progress(self, reader: str, expected: Mapping[str, Collection[str]]) -> dict[str, bool]:
        """For each case of ``expected`` (``{case: its methods}``), whether ``reader`` has rated it
        fully: location and rationale of every panel, and agree.

        Example:
            >>> import tempfile
            >>> store = RatingStore(Path(tempfile.mkdtemp()) / "ratings.sqlite"); _ = store.add_reader("ana")
            >>> store.save_panel_rating("ana", "c1", "gradcam", panel="A", mode="open", location=4, rationale=3)
            >>> store.save_case_rating("ana", "c1", agree=0)
            >>> store.progress("ana", {"c1": ["gradcam"], "c2": ["gradcam"]})
            {'c1': True, 'c2': False}
        """
        with self.connect() as db:
            scored = set(db.execute("SELECT case_id, method FROM panel_ratings WHERE reader = ? "
                                    "AND location IS NOT NULL AND rationale IS NOT NULL", (reader,)))
            agreed = {case for (case,) in db.execute("SELECT case_id FROM case_ratings WHERE reader = ? "
                                                     "AND agree IS NOT NULL", (reader,))}
        return {case: case in agreed and all((case, method) in scored for method in methods)
                for case, methods in expected.items()}

    def rows(self, reader: str | None = None) -> list[dict[str, Any]]:
        """One dict per (reader, case, method) rated, in :data:`COLUMNS`, sorted; a case's
        ``agree`` and ``note`` repeat on each of its panels' rows, and a case answered without any
        panel rated has one row with an empty ``method`` (nothing a reader gave is left out of an
        export). ``reader``: only theirs."""
        panels = ("SELECT p.reader, p.case_id, p.method, p.location, p.rationale, c.agree, c.note, p.panel, p.mode, "
                  "max(p.updated, coalesce(c.updated, '')) FROM panel_ratings p LEFT JOIN case_ratings c "
                  "ON c.reader = p.reader AND c.case_id = p.case_id")
        cases_only = ("SELECT c.reader, c.case_id, '', NULL, NULL, c.agree, c.note, NULL, NULL, c.updated "
                      "FROM case_ratings c WHERE NOT EXISTS (SELECT 1 FROM panel_ratings p "
                      "WHERE p.reader = c.reader AND p.case_id = c.case_id)")
        arguments: tuple = ()
        if reader is not None:
            panels, cases_only = panels + " WHERE p.reader = ?", cases_only + " AND c.reader = ?"
            arguments = (reader, reader)
        with self.connect() as db:
            found = db.execute(f"{panels} UNION ALL {cases_only} ORDER BY 1, 2, 3", arguments).fetchall()
        return [dict(zip(COLUMNS, row)) for row in found]

    def export_csv(self, path: str | os.PathLike, reader: str | None = None) -> Path:
        """Write :meth:`rows` to the CSV file ``path`` (replaced whole); returns it."""
        return _write(path, ratings_csv(self.rows(reader)))

    def export_json(self, path: str | os.PathLike, reader: str | None = None) -> Path:
        """Write :meth:`rows` to ``path`` as a JSON list of objects (replaced whole); returns it."""
        return _write(path, ratings_json(self.rows(reader)))


def ratings_csv(rows: list[Mapping[str, Any]], columns: Sequence[str] = COLUMNS) -> str:
    """Rows as CSV text with a header of ``columns`` (an empty cell for None), every cell
    :func:`spreadsheet_safe`.

    Example:
        >>> ratings_csv([{"reader": "ana", "case": "c1", "method": "gradcam", "location": 4, "note": "=1+1"}]
        ...             ).splitlines()
        ['reader,case,method,location,rationale,agree,note,panel,mode,updated', "ana,c1,gradcam,4,,,'=1+1,,,"]
    """
    text = io.StringIO()
    # with "\r\n" ending its lines, the writer quotes a cell holding either character
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows({column: spreadsheet_safe(value) for column, value in row.items()} for row in rows)
    return text.getvalue()


def letters_only(rows: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` in :data:`LETTER_COLUMNS`, each case's panels in letter order: what a blinded reader
    may see of their ratings before the lock (rows in method order would give away the methods'
    alphabetical order).

    Example:
        >>> rows = [{"reader": "ana", "case": "c1", "method": m, "panel": p} for m, p in (("adversarial", "B"),
        ...                                                                               ("gradcam", "A"))]
        >>> [(row["panel"], "method" in row) for row in letters_only(rows)]
        [('A', False), ('B', False)]
    """
    kept = [{column: row.get(column) for column in LETTER_COLUMNS} for row in rows]
    return sorted(kept, key=lambda row: (row["reader"], row["case"], row["panel"] or ""))


def spreadsheet_safe(value: Any) -> Any:
    """``value`` as a CSV cell no spreadsheet runs as a formula: text that starts with ``=``, ``+``,
    ``-``, ``@``, a tab or a carriage return gets a leading ``'`` (OWASP's advice against CSV
    injection); numbers, negative ones too, and None are kept as they are.

    Example:
        >>> [spreadsheet_safe(value) for value in ("=SUM(A1:A9)", "-2", "disc tilted", -2, None)]
        ["'=SUM(A1:A9)", "'-2", 'disc tilted', -2, None]
    """
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def ratings_json(rows: list[Mapping[str, Any]]) -> str:
    """Rows as a JSON list of objects, one per line."""
    return "[\n" + ",\n".join(json.dumps(dict(row)) for row in rows) + "\n]\n"


def _write(path: str | os.PathLike, text: str) -> Path:
    from xmed.runs import write_text_atomic

    write_text_atomic(path, text)
    return Path(path)
