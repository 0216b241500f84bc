"""A C2SP tlog-witness: checks a log's new checkpoint against the last one it cosigned.

Pure Python, no Django and no project database: each witness keeps its own SQLite file,
so a consortium member can run one next to (or without) a copy of this app.
`manage.py run_witness` serves it over HTTP.
"""

import json
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger import cosign, merkle, note

MAX_REQUEST = 64 * 1024
SIZE_CONTENT_TYPE = "text/x.tlog.size"


class Answer(NamedTuple):
    status: int
    content_type: str
    body: bytes


def _text(status: int, message: str) -> Answer:
    return Answer(status, "text/plain; charset=utf-8", (message + "\n").encode())


class Witness:
    """The witness's logic over its SQLite state; safe across threads and processes."""

    def __init__(
        self, *, name: str, private_key: Ed25519PrivateKey, logs: dict[str, list[str]], state: str
    ):
        note.check_key_name(name)
        for keys in logs.values():
            for vkey in keys:
                note.parse_verifier_key(vkey)  # refuse a malformed key at start-up
        self.name, self.private_key, self.logs, self.state = name, private_key, logs, state
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS checkpoints (origin TEXT PRIMARY KEY, "
                "size INTEGER NOT NULL, root BLOB NOT NULL, note TEXT NOT NULL, "
                "updated_at REAL NOT NULL)"
            )
            # Refused checkpoints with a valid log signature may be proof of misbehaviour.
            db.execute(
                "CREATE TABLE IF NOT EXISTS refused (id INTEGER PRIMARY KEY, origin TEXT, "
                "status INTEGER, reason TEXT, request BLOB, at REAL)"
            )

    @property
    def verifier_key(self) -> str:
        return cosign.verifier_key(self.name, note.public_key_bytes(self.private_key))

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves.
        return sqlite3.connect(self.state, timeout=30, isolation_level=None)

    def latest(self, origin: str) -> tuple[int, bytes] | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT size, root FROM checkpoints WHERE origin = ?", (origin,)
            ).fetchone()
        return (row[0], bytes(row[1])) if row else None

    def add_checkpoint(self, data: bytes) -> Answer:
        try:
            old_size, proof, checkpoint_note = cosign.parse_add_checkpoint(data)
            body, _ = note.split_note(checkpoint_note)
            checkpoint = note.parse_checkpoint(body)
        except note.NoteError as exc:
            return _text(400, f"malformed request: {exc}")
        keys = self.logs.get(checkpoint.origin)
        if keys is None:
            return _text(404, f"unknown log origin {checkpoint.origin!r}")
        try:
            note.open_note(checkpoint_note, keys)
        except note.NoteError as exc:
            return _text(403, f"checkpoint is not signed by the log's key: {exc}")
        if old_size > checkpoint.size:
            return _text(400, "old size is larger than the checkpoint size")
        db = self._connect()
        try:
            # BEGIN IMMEDIATE takes the write lock before the read: the check of the old
            # size and the update are one step, so two requests cannot roll the state back.
            db.execute("BEGIN IMMEDIATE")
            answer = self._check_and_record(db, old_size, proof, checkpoint, checkpoint_note, body)
            if answer.status == 200:
                db.execute("COMMIT")
            else:
                if answer.status in (409, 422):
                    db.execute(
                        "INSERT INTO refused (origin, status, reason, request, at) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (checkpoint.origin, answer.status, answer.body.decode(), data, time.time()),
                    )
                db.execute("COMMIT")
            return answer
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def _check_and_record(self, db, old_size, proof, checkpoint, checkpoint_note, body) -> Answer:
        row = db.execute(
            "SELECT size, root FROM checkpoints WHERE origin = ?", (checkpoint.origin,)
        ).fetchone()
        stored_size, stored_root = (row[0], bytes(row[1])) if row else (0, merkle.EMPTY_ROOT)
        if old_size != stored_size:
            return Answer(409, SIZE_CONTENT_TYPE, f"{stored_size}\n".encode())
        if old_size == checkpoint.size:
            if row is not None and stored_root != checkpoint.root:
                return _text(409, "same size as the cosigned checkpoint but a different root")
        if old_size == 0 and proof:
            return _text(422, "the consistency proof from size 0 must be empty")
        if not merkle.verify_consistency(
            first=old_size,
            second=checkpoint.size,
            first_root=stored_root,
            second_root=checkpoint.root,
            proof=proof,
        ):
            return _text(
                422,
                f"checkpoint of size {checkpoint.size} is not consistent with the one of "
                f"size {old_size} this witness cosigned",
            )
        db.execute(
            "INSERT INTO checkpoints (origin, size, root, note, updated_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (origin) DO UPDATE SET size = excluded.size, "
            "root = excluded.root, note = excluded.note, updated_at = excluded.updated_at",
            (checkpoint.origin, checkpoint.size, checkpoint.root, checkpoint_note, time.time()),
        )
        line = cosign.cosign(body, self.name, self.private_key, int(time.time()))
        return Answer(200, "text/plain; charset=utf-8", line.encode())


class _Handler(BaseHTTPRequestHandler):
    witness: Witness
    protocol_version = "HTTP/1.1"

    def _send(self, answer: Answer) -> None:
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def do_POST(self):  # noqa: N802 (http.server's naming)
        if self.path.rstrip("/").rsplit("/", 1)[-1] != "add-checkpoint":
            return self._send(_text(404, "not found"))
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self._send(_text(411, "Content-Length is required"))
        if not 0 <= length <= MAX_REQUEST:
            return self._send(_text(413, f"request larger than {MAX_REQUEST} bytes"))
        self._send(self.witness.add_checkpoint(self.rfile.read(length)))

    def do_GET(self):  # noqa: N802
        # Not part of tlog-witness: who we are and what we last cosigned, for operators.
        if self.path.rstrip("/") not in ("", "/"):
            return self._send(_text(404, "not found"))
        state = {
            origin: (lambda s: s and {"size": s[0]})(self.witness.latest(origin))
            for origin in self.witness.logs
        }
        body = json.dumps({"name": self.witness.name, "verifier_key": self.witness.verifier_key,
                           "logs": state}).encode()
        self._send(Answer(200, "application/json", body))

    def log_message(self, format, *args):  # keep test output quiet; errors still print
        pass


def serve(witness: Witness, host: str, port: int) -> ThreadingHTTPServer:
    handler = type("WitnessHandler", (_Handler,), {"witness": witness})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve_in_thread(witness: Witness, host: str = "127.0.0.1", port: int = 0):
    server = serve(witness, host, port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
