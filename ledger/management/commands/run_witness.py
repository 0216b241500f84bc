"""Run a C2SP tlog-witness for consortium logs, with its own SQLite state and key file."""

import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from django.core.management.base import BaseCommand, CommandError

from ledger import note
from ledger.witness import Witness, serve


def _load_or_create_key(path: Path) -> Ed25519PrivateKey:
    if path.exists():
        seed = path.read_bytes()
        if len(seed) != 32:
            raise CommandError(f"{path} must hold a 32-byte Ed25519 seed")
        return Ed25519PrivateKey.from_private_bytes(seed)
    key = Ed25519PrivateKey.generate()
    # Created 0600 before the seed is written, so it is never readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))
    return key


class Command(BaseCommand):
    help = (
        "Serve POST /add-checkpoint (C2SP tlog-witness) for the given logs, cosigning "
        "checkpoints consistent with the last one this witness cosigned. Prints its "
        "verifier key first, for the log operator to register."
    )

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="witness key name, e.g. example.org/w1")
        parser.add_argument("--key-file", required=True, help="Ed25519 seed; made if missing")
        parser.add_argument(
            "--state", default=os.getenv("LEDGER_WITNESS_STATE"),
            help="SQLite file for this witness's state (env LEDGER_WITNESS_STATE)",
        )
        parser.add_argument(
            "--log", action="append", required=True, metavar="[ORIGIN=]VKEY",
            help="a log to witness: its signed-note verifier key; origin defaults to its name",
        )
        parser.add_argument("--listen", default="127.0.0.1:8081", help="host:port")

    def handle(self, *args, name, key_file, state, log, listen, **options):
        if not state:
            raise CommandError("give --state FILE or set LEDGER_WITNESS_STATE")
        logs: dict[str, list[str]] = {}
        for item in log:
            origin, sep, vkey = item.partition("=")
            if not sep:
                origin, vkey = None, item
            try:
                parsed = note.parse_verifier_key(vkey)
            except note.NoteError as exc:
                raise CommandError(str(exc)) from None
            logs.setdefault(origin or parsed.name, []).append(vkey)
        host, _, port = listen.rpartition(":")
        try:
            witness = Witness(
                name=name, private_key=_load_or_create_key(Path(key_file)), logs=logs, state=state
            )
            server = serve(witness, host or "127.0.0.1", int(port))
        except (note.NoteError, ValueError, OSError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"verifier key {witness.verifier_key}")
        self.stdout.write(f"listening on http://{host}:{server.server_address[1]}/add-checkpoint")
        sys.stdout.flush()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
