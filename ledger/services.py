"""Writes to the ledger, the sequencer, the signing key and the integrity check."""

import base64
import hashlib
import json
import logging
import re
import secrets
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from ledger import blinding, cosign, integrity, merkle, note, tiles
from ledger.canonical import canonical_json
from ledger.db import raw_cursor
from ledger.keys import ledger_key_get_or_create, log_private_key

# Part of this module's API; it lives in ledger.keys so selectors can use it too.
from ledger.keys import ledger_verifier_key as ledger_verifier_key
from ledger.models import (
    Checkpoint,
    Cosignature,
    Entry,
    EntryBundle,
    EntryOpenings,
    HashTile,
    Member,
    MemberToken,
    TreeState,
    WitnessRefusal,
)
from ledger.selectors import hash_tiles, proof_consistency

logger = logging.getLogger(__name__)

KIND_PATTERN = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")

# Keys that name personal data, compared after folding camelCase, '-', ' ' and '.' to '_'.
# The ledger is public and permanent: participants appear only under pseudonyms.
PERSONAL_DATA_KEYS = frozenset(
    [
        "name",
        "first_name",
        "last_name",
        "full_name",
        "given_name",
        "family_name",
        "middle_name",
        "maiden_name",
        "surname",
        "email",
        "e_mail",
        "email_address",
        "mail",
        "phone",
        "phone_number",
        "telephone",
        "tel",
        "mobile",
        "mobile_number",
        "fax",
        "address",
        "street",
        "street_address",
        "home_address",
        "postal_address",
        "postcode",
        "post_code",
        "postal_code",
        "zip",
        "zip_code",
        "zipcode",
        "birth_date",
        "date_of_birth",
        "dob",
        "birthdate",
        "birthday",
        "place_of_birth",
        "ssn",
        "social_security_number",
        "national_id",
        "national_insurance_number",
        "nhs_number",
        "passport",
        "passport_number",
        "ip_address",
        "username",
        "user_name",
    ]
)
# A match starts only where a word does (after whitespace, '@' or the start): tried at
# every position, the pattern took quadratic time on a long string without '@' (28 s for
# 70,000 characters).
_EMAIL = re.compile(r"(?<![^@\s])[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")
def _personal_data(value, path: str) -> str | None:
    """The path of the first key (or e-mail-like string) that looks like personal data."""
    return blinding.first_match(value, path, key=PERSONAL_DATA_KEYS.__contains__,
                                text=lambda s: "@" in s and bool(_EMAIL.search(s)))


def _leaf(*, kind: str, payload: dict, committed: dict | None = None) -> tuple[bytes, dict | None]:
    """The leaf bytes of a new entry and the openings of its commitments (None when it
    commits to nothing), after refusing a bad kind, personal data or a clear identifier.

    `payload` is what the entry says in the clear; `committed` the values that say who,
    which the leaf carries only as salted commitments (ledger.blinding) under "commit"."""
    if not isinstance(kind, str) or len(kind) > 64 or not KIND_PATTERN.fullmatch(kind):
        raise ValueError(f"kind {kind!r} must be dotted lower-case words, at most 64 characters")
    if not isinstance(payload, dict):
        raise ValueError("payload must be a JSON object")
    if payload.get("kind", kind) != kind:
        raise ValueError(f"payload kind {payload['kind']!r} differs from kind {kind!r}")
    if "commit" in payload:
        raise ValueError("payload.commit is the ledger's own: pass the values as committed=")
    found = _personal_data(payload, "payload") or _personal_data(committed or {}, "committed")
    if found:
        raise ValueError(
            f"{found} looks like personal data; the ledger takes pseudonymous ids only"
        )
    found = blinding.clear_identifier(payload)
    if found:
        raise ValueError(f"{found} names who in the clear; pass it as committed= so the entry "
                         "carries only a salted commitment to it")
    openings = None
    body = {**payload, "kind": kind}
    if committed:
        body["commit"], openings = blinding.blind(committed)
    leaf = canonical_json(body)
    if len(leaf) > tiles.MAX_ENTRY:
        raise ValueError(f"payload is {len(leaf)} bytes; a ledger entry holds at most "
                         f"{tiles.MAX_ENTRY} (a C2SP tlog-tiles entry bundle's limit)")
    return leaf, openings


def entry_append(*, kind: str, payload: dict, committed: dict | None = None, subject: str = "") -> Entry:
    """Adds a pending entry; sealing is enqueued when the caller's transaction commits.

    The stored leaf is the canonical JSON of the payload with "kind" added, so the kind is
    covered by the leaf hash, and "commit" holding a salted commitment to each value of
    `committed` (ledger.blinding); their openings are kept off the ledger under `subject`
    (the pseudonym of the participant the entry is about), which erasure deletes by.
    """
    leaf, openings = _leaf(kind=kind, payload=payload, committed=committed)
    entry = Entry.objects.create(payload=leaf)
    if openings:
        EntryOpenings.objects.create(entry=entry, subject=subject, openings=openings)
    entry.opened = openings  # for the caller to hand to whoever is entitled, without a read
    transaction.on_commit(_enqueue_seal)
    return entry


def entry_append_with(*, kind: str, payload: dict, created_at, sql: str, params: list,
                      committed: dict | None = None, subject: str = "") -> tuple:
    """entry_append and the caller's own INSERT in one statement (PostgreSQL: the entry's
    INSERT, and its openings', in a data-modifying WITH named `e`), so a record and its
    ledger entry are written in one round trip, all or none. `sql` is the caller's INSERT,
    naming its entry as `(SELECT id FROM e)`; returns that statement's first row (its
    RETURNING) and the entry's openings (None when it commits to nothing). Sealing is asked
    for when the caller's write commits, as entry_append does."""
    qn = connection.ops.quote_name
    leaf, openings = _leaf(kind=kind, payload=payload, committed=committed)
    entry_sql = (f"INSERT INTO {qn(Entry._meta.db_table)} ({qn('payload')}, {qn('created_at')})"
                 f" VALUES (%s, %s) RETURNING {qn('id')}")
    head, head_params = f"WITH e AS ({entry_sql})", [leaf, created_at]
    if openings:
        table = qn(EntryOpenings._meta.db_table)
        head += (f", o AS (INSERT INTO {table} ({qn('entry_id')}, {qn('subject')}, {qn('openings')})"
                 f" SELECT id, %s, %s::jsonb FROM e)")
        head_params += [subject, json.dumps(openings)]
    with connection.cursor() as cursor:
        cursor.execute(f"{head} {sql}", [*head_params, *params])
        row = cursor.fetchone()
    transaction.on_commit(_enqueue_seal)
    return row, openings


def openings_erase(*, subject: str) -> int:
    """Erasure: delete the openings kept under `subject`. The entries stay in the log,
    verifiable; nothing can show any more that they were about this subject."""
    if not subject:
        raise ValueError("openings_erase needs a subject")
    deleted, _ = EntryOpenings.objects.filter(subject=subject).delete()
    return deleted


def _enqueue_seal() -> None:
    from ledger.tasks import seal_soon  # tasks import this module

    seal_soon()


def _tree_state_locked() -> TreeState:
    # get_or_create retries the read after an IntegrityError, so two first sealers meet
    # on the primary key and the loser then waits for the lock.
    state, _ = TreeState.objects.select_for_update().get_or_create(
        id=1, defaults={"size": 0, "root_hash": merkle.EMPTY_ROOT}
    )
    return state


def _entries_mark_sealed(ids: list[int], first_index: int, *, sealed_at,
                         leaf_hashes: list[bytes]) -> None:
    """Gives the entries ids (in id order) the indexes first_index, first_index + 1, ...
    and their leaf hashes (leaf_hashes, in the same order: what binds each row to its
    leaf), sets sealed_at and clears the payloads, which now live in their bundles.

    PostgreSQL: one UPDATE ... FROM unnest(ids) WITH ORDINALITY, the ids sent as one
    array literal (psycopg dumps a list element by element in Python), so the statement
    text and its parse do not grow with the batch; the leaf hashes travel as one bytea,
    bound in binary, row n taking its 32 bytes at (n - 1) * 32. The id range lets
    PostgreSQL find the rows by the primary key: without it the join is planned as a scan
    of the whole table, a cost that grows with the log. Elsewhere one UPDATE ... FROM
    VALUES per chunk of 300 rows (bulk_update's CASE per row and field was 80% of the
    sealing time). The CASTs keep the join bigint to bigint, on the primary key.
    """
    if not ids:
        return
    if len(leaf_hashes) != len(ids) or any(len(h) != merkle.HASH_SIZE for h in leaf_hashes):
        raise ValueError("one 32-byte leaf hash per entry sealed")
    qn = connection.ops.quote_name
    table = qn(Entry._meta.db_table)
    if connection.vendor == "postgresql":
        with raw_cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} AS e SET {qn('index')} = %s::bigint + v.n - 1, "
                f"{qn('payload')} = NULL, {qn('sealed_at')} = %s, "
                f"{qn('leaf_hash')} = substring(%b::bytea"
                f" FROM (v.n::int - 1) * {merkle.HASH_SIZE} + 1 FOR {merkle.HASH_SIZE}) "
                f"FROM unnest(%s::bigint[]) WITH ORDINALITY AS v (id, n) WHERE e.{qn('id')} = v.id "
                f"AND e.{qn('id')} BETWEEN %s::bigint AND %s::bigint",
                [first_index, sealed_at, b"".join(leaf_hashes), "{" + ",".join(map(str, ids)) + "}",
                 min(ids), max(ids)],
            )
            if cursor.rowcount != len(ids):
                raise RuntimeError(f"sealing updated {cursor.rowcount} of {len(ids)} entries")
        return
    rows = [(entry_id, first_index + offset, digest)
            for offset, (entry_id, digest) in enumerate(zip(ids, leaf_hashes, strict=True))]
    when = connection.ops.adapt_datetimefield_value(sealed_at)
    with connection.cursor() as cursor:
        for start in range(0, len(rows), 300):
            chunk = rows[start : start + 300]
            values = ", ".join(["(%s, %s, %s)"] * len(chunk))
            cursor.execute(
                f"WITH v (id, idx, leaf) AS (VALUES {values}) "
                f"UPDATE {table} SET {qn('index')} = CAST(v.idx AS BIGINT), "
                f"{qn('payload')} = NULL, {qn('sealed_at')} = %s, {qn('leaf_hash')} = v.leaf "
                f"FROM v WHERE {table}.{qn('id')} = CAST(v.id AS BIGINT)",
                [value for row in chunk for value in row] + [when],
            )


# Each column of the tables _upsert writes, with its PostgreSQL type.
_COLUMN_TYPES = {"level": "int2", "index": "int8", "data": "bytea", "hashes": "bytea"}


def _upsert(model, key_fields: list[str], value_field: str, rows: list[tuple]) -> None:
    """Writes rows (*key, value), replacing the value of a row that exists: the tiles and
    bundles a batch fills or extends. PostgreSQL: one INSERT ... ON CONFLICT from arrays
    bound in binary; elsewhere bulk_create's."""
    if not rows:
        return
    if connection.vendor == "postgresql":
        qn = connection.ops.quote_name
        columns = [*key_fields, value_field]
        arrays = ", ".join(f"%b::{_COLUMN_TYPES[column]}[]" for column in columns)
        with raw_cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {qn(model._meta.db_table)} ({', '.join(map(qn, columns))}) "
                f"SELECT * FROM unnest({arrays}) ON CONFLICT ({', '.join(map(qn, key_fields))}) "
                f"DO UPDATE SET {qn(value_field)} = EXCLUDED.{qn(value_field)}",
                [list(column) for column in zip(*rows, strict=True)],
                binary=True,
            )
        return
    model.objects.bulk_create(
        [model(**dict(zip([*key_fields, value_field], row, strict=True))) for row in rows],
        update_conflicts=True, unique_fields=key_fields, update_fields=[value_field],
    )


def _pending(limit: int) -> list[tuple[int, bytes]]:
    """The first pending entries in id order: (id, payload). On PostgreSQL in binary, so
    the payloads arrive as bytes rather than hex text."""
    rows = Entry.objects.filter(index__isnull=True).order_by("id").values_list("id", "payload")[:limit]
    if connection.vendor != "postgresql":
        return [(entry_id, bytes(payload)) for entry_id, payload in rows]
    sql, params = rows.query.sql_with_params()
    with raw_cursor() as cursor:
        cursor.execute(sql, params, binary=True)
        return cursor.fetchall()


def _seal_batch(limit: int, signer: dict) -> int:
    with transaction.atomic():
        state = _tree_state_locked()
        pending = _pending(limit)
        if not pending:
            return 0
        size = state.size
        # The frontier subtrees and the partial tile of every level, in one query.
        frontier = merkle.subtrees(0, size)
        stored = hash_tiles(keys=tiles.tiles_of(frontier) | set(tiles.edge(size)))
        found = tiles.subtrees_from(frontier, stored)
        if len(found) != len(frontier):
            raise RuntimeError(f"hash tiles do not hold the frontier of the tree of {size}")
        tree = merkle.CompactRange(size, [found[pair] for pair in frontier])
        payloads = [bytes(payload) for _, payload in pending]
        leaf_hash = merkle.leaf_hash
        leaves = [leaf_hash(payload) for payload in payloads]
        runs = tree.extend(leaves)
        partial = None
        if size % tiles.WIDTH:
            partial = (EntryBundle.objects.filter(index=size // tiles.WIDTH)
                       .values_list("data", flat=True).first())
        try:
            bundles = tiles.extend_bundles(size, payloads, None if partial is None else bytes(partial))
            written = tiles.extend_tiles(size, runs, stored)
        except ValueError as exc:
            raise RuntimeError(f"cannot seal: {exc}") from None
        _upsert(EntryBundle, ["index"], "data", sorted(bundles.items()))
        _upsert(HashTile, ["level", "index"], "hashes",
                [(*key, data) for key, data in sorted(written.items())])
        _entries_mark_sealed([entry_id for entry_id, _ in pending], size, sealed_at=timezone.now(),
                             leaf_hashes=leaves)
        state.size, state.root_hash = tree.size, tree.root()
        state.save(update_fields=["size", "root_hash", "updated_at"])
        key = ledger_key_get_or_create()
        # Decrypted once per ledger_seal_pending call, and again if the key row changes.
        if signer.get("row") != (key.pk, key.name, key.encrypted_private_key, bytes(key.public_key)):
            signer["row"] = (key.pk, key.name, key.encrypted_private_key, bytes(key.public_key))
            signer["private"] = log_private_key(key)
        body = note.checkpoint_body(settings.LEDGER_ORIGIN, state.size, state.root_hash)
        Checkpoint.objects.create(
            size=state.size,
            root_hash=state.root_hash,
            note=note.sign_note(body, key.name, signer["private"]),
        )
        return len(pending)


def ledger_seal_pending(*, max_batch: int | None = None) -> int:
    """Seals pending entries in id order, a batch per transaction, until none is left.

    Each batch holds the TreeState row lock (one sequencer), reads only the O(log n)
    frontier subtrees, and ends with a signed checkpoint. Returns how many were sealed;
    running it again, or concurrently, never seals an entry twice.
    """
    limit = max_batch or settings.LEDGER_SEAL_BATCH
    if limit < 1:
        raise ValueError("max_batch must be at least 1")
    total, signer = 0, {}
    while True:
        sealed = _seal_batch(limit, signer)
        total += sealed
        if sealed < limit:
            return total


# -- the integrity check (its machinery is ledger.integrity) --

VerifyReport = integrity.VerifyReport


def ledger_verify(
    *,
    progress: Callable[[int, int], None] | None = None,
    chunk_size: int = integrity.DEFAULT_CHUNK_SIZE,
    workers: int | None = None,
) -> VerifyReport:
    """Recomputes the log from the payload bytes and checks every stored hash against it.

    Checks the tree as of the head read first, so sealing may go on meanwhile: sealed
    bytes never change (a partial bundle or tile only grows) and later entries lie beyond
    it. Every leaf hash, every stored subtree, the root at every checkpoint size, each
    checkpoint's signature and the head itself; a gap ends the check there, named as the
    first bad entry. And every sealed index's Entry row (the identity records point at,
    outside the log): a row missing, moved to another index (two rows' indexes swapped)
    or altered so that its leaf_hash is not its leaf's is named by the index. Entries are
    read a page of chunk_size indexes at a time, so memory stays constant;
    progress(done, total) is called after each page.

    workers: processes verifying entries in parallel (None: os.cpu_count() for a log of
    integrity.PARALLEL_MIN_ENTRIES or more, else 1). Only on PostgreSQL and outside a
    transaction, since the workers read committed rows over their own connections;
    elsewhere, and with 1, everything runs in this process. The report is the same either
    way.
    """
    return integrity.verify_log(progress=progress, chunk_size=chunk_size, workers=workers)


# -- consortium members, tokens and witnesses --

MEMBER_TOKEN_PREFIX = "ledger-member-"


class CosignatureError(ValueError):
    """A submitted cosignature is malformed (status 400), or not from a registered
    witness or not valid (403), or for a checkpoint we never signed (404)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def member_register(*, name: str, verifier_key: str = "", witness_url: str = "") -> Member:
    """Registers a consortium member; a cosigner verifier key and URL make it a witness."""
    name = name.strip()
    if not name or len(name) > 255:
        raise ValueError("member name must be 1 to 255 characters")
    if verifier_key:
        try:
            cosign.parse_verifier_key(verifier_key)
        except note.NoteError as exc:
            raise ValueError(f"verifier_key: {exc}") from None
    if witness_url and not witness_url.startswith(("http://", "https://")):
        raise ValueError("witness_url must be an http(s) URL")
    if witness_url and not verifier_key:
        raise ValueError("a witness needs a verifier_key to check its cosignatures with")
    if Member.objects.filter(name=name).exists():
        raise ValueError(f"a member named {name!r} already exists")
    if verifier_key and Member.objects.filter(verifier_key=verifier_key).exists():
        raise ValueError("that verifier key is already registered")
    return Member.objects.create(
        name=name, verifier_key=verifier_key, witness_url=witness_url.rstrip("/")
    )


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def member_token_create(*, member_id: int) -> tuple[MemberToken, str]:
    """A new read token for a member; the plain token exists only in the return value."""
    member = Member.objects.get(id=member_id, active=True)
    token = MEMBER_TOKEN_PREFIX + secrets.token_urlsafe(32)
    return MemberToken.objects.create(member=member, token_hash=token_hash(token)), token


def _witnesses():
    return Member.objects.filter(active=True).exclude(verifier_key="")


def checkpoint_cosignature_add(*, size: int, line: str, member: Member | None = None) -> Cosignature:
    """Stores a verified cosignature line on our checkpoint of this size.

    Only cosignatures by registered, active witnesses are kept; anything else raises
    CosignatureError before a row is written.
    """
    if not isinstance(line, str) or not line.startswith(note.SIGNATURE_PREFIX):
        raise CosignatureError("cosignature must be a signed-note line starting with '— '", 400)
    line = line if line.endswith("\n") else line + "\n"
    if line.count("\n") != 1:
        raise CosignatureError("give exactly one cosignature line", 400)
    checkpoint = Checkpoint.objects.filter(size=size).first()
    if checkpoint is None:
        raise CosignatureError(f"this log has no checkpoint of size {size}", 404)
    candidates = [member] if member else list(_witnesses())
    keys = {m.verifier_key: m for m in candidates}
    try:
        found = cosign.verify_cosignatures(checkpoint.note + line, list(keys))
    except note.BadSignatureError as exc:
        raise CosignatureError(str(exc), 403) from None
    except note.NoteError as exc:
        raise CosignatureError(f"malformed cosignature: {exc}", 400) from None
    if not found:
        raise CosignatureError("cosignature is not by a registered witness key", 403)
    (cosignature,) = found
    by = next(m for vkey, m in keys.items() if cosign.parse_verifier_key(vkey)[:2] == (
        cosignature.name, cosignature.key_id))
    row, _ = Cosignature.objects.update_or_create(
        checkpoint=checkpoint,
        member=by,
        defaults={"timestamp": cosignature.timestamp, "line": cosignature.line},
    )
    return row


def _post(url: str, body: bytes) -> tuple[int, str, str]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "text/plain; charset=utf-8"}
    )
    try:
        with urllib.request.urlopen(request, timeout=settings.LEDGER_WITNESS_TIMEOUT) as answer:
            return answer.status, answer.headers.get("Content-Type", ""), answer.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read().decode(errors="replace")


def _refuse(member: Member, checkpoint: Checkpoint, status: int, detail: str) -> str:
    WitnessRefusal.objects.create(
        member=member,
        size=checkpoint.size,
        root_hash=bytes(checkpoint.root_hash),
        status=status,
        detail=detail[:2000],
    )
    logger.warning("ledger: witness %s refused checkpoint %d: %s %s",
                   member.name, checkpoint.size, status, detail.strip()[:200])
    return "refused"


def checkpoint_witness(*, checkpoint_id: int, member_id: int) -> str:
    """Asks one witness to cosign a checkpoint (C2SP tlog-witness add-checkpoint).

    Starts from the size this witness last cosigned for us and follows one 409 with the
    size the witness reports. Returns "cosigned", "refused" (stored as a WitnessRefusal)
    or "unreachable" (nothing stored; the next push tries again).
    """
    checkpoint = Checkpoint.objects.get(id=checkpoint_id)
    member = _witnesses().exclude(witness_url="").get(id=member_id)
    if Cosignature.objects.filter(checkpoint=checkpoint, member=member).exists():
        return "cosigned"
    last = (
        Cosignature.objects.filter(member=member)
        .order_by("-checkpoint__size")
        .values_list("checkpoint__size", flat=True)
        .first()
    )
    old = last or 0
    tried = set()
    while old not in tried:
        tried.add(old)
        if old > checkpoint.size:
            return _refuse(member, checkpoint, 409,
                           f"witness has cosigned size {old}, beyond this checkpoint")
        proof = proof_consistency(first=old, second=checkpoint.size) if old else []
        body = cosign.add_checkpoint_body(old, proof, checkpoint.note)
        try:
            status, content_type, text = _post(f"{member.witness_url}/add-checkpoint", body)
        except (OSError, ValueError) as exc:
            logger.warning("ledger: witness %s unreachable: %s", member.name, exc)
            return "unreachable"
        if status == 200:
            try:
                checkpoint_cosignature_add(size=checkpoint.size, line=text, member=member)
            except CosignatureError as exc:
                return _refuse(member, checkpoint, 502, f"witness answered a bad cosignature: {exc}")
            return "cosigned"
        if status == 409 and content_type.startswith("text/x.tlog.size"):
            reported = text.strip()
            if not reported.isdigit():
                return _refuse(member, checkpoint, 409, f"unparseable size {reported[:40]!r}")
            old = int(reported)
            continue
        return _refuse(member, checkpoint, status, text)
    return _refuse(member, checkpoint, 409, f"witness keeps reporting size {old}")


def ledger_witness_push() -> dict[str, str]:
    """Asks every registered witness to cosign the latest checkpoint: {member: outcome}."""
    checkpoint = Checkpoint.objects.order_by("-size").first()
    if checkpoint is None:
        return {}
    return {
        member.name: checkpoint_witness(checkpoint_id=checkpoint.id, member_id=member.id)
        for member in _witnesses().exclude(witness_url="").order_by("id")
    }


# -- auditing another node's log over its API --


class RemoteAuditError(Exception):
    pass


def _get(url: str, token: str | None) -> tuple[bytes, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.read(), answer.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")[:300]
        raise RemoteAuditError(f"GET {url}: HTTP {error.code} {detail}") from None
    except (OSError, ValueError) as exc:
        raise RemoteAuditError(f"GET {url}: {exc}") from None


def _get_json(url: str, token: str | None) -> dict:
    body, _ = _get(url, token)
    try:
        return json.loads(body)
    except ValueError:
        raise RemoteAuditError(f"GET {url}: not JSON") from None


def _prefix_root(leaf_hashes, size: int) -> bytes:
    """MTH of the first `size` leaf hashes in the scratch file."""
    leaf_hashes.seek(0)
    tree = merkle.CompactRange()
    while tree.size < size:
        chunk = leaf_hashes.read(32 * min(65536, size - tree.size))
        tree.extend([chunk[i : i + 32] for i in range(0, len(chunk), 32)])
    return tree.root()


def _first_unproven_leaf(base: str, token: str | None, checkpoint, leaf_hashes) -> int:
    """The first index whose leaf, as served, is not the signed tree's.

    The first k leaves served are the signed tree's exactly when the remote's consistency
    proof from size k to the checkpoint verifies with their root (RFC 9162 §2.1.4). That
    holds up to the first bad leaf and fails after it, so a binary search over k finds it
    with O(log n) proofs. A remote that serves bad proofs only moves the answer earlier,
    never past a bad leaf.
    """
    good, bad = 0, checkpoint.size  # the first `good` leaves are proven; `bad` are not
    while bad - good > 1:
        k = (good + bad) // 2
        page = _get_json(f"{base}/proofs/consistency?first={k}&second={checkpoint.size}", token)
        try:
            proof = [base64.b64decode(h) for h in page.get("hashes", [])]
        except (TypeError, ValueError):
            proof = None
        if proof is not None and merkle.verify_consistency(
            first=k, second=checkpoint.size, first_root=_prefix_root(leaf_hashes, k),
            second_root=checkpoint.root, proof=proof,
        ):
            good = k
        else:
            bad = k
    return good


def ledger_audit_remote(
    *, url: str, token: str | None = None, progress: Callable[[int, int], None] | None = None
) -> dict:
    """Audits another node's log: its signed checkpoint, every leaf up to it, and its
    consistency with every checkpoint of that log seen here before (stored on success).

    The log's verifier key is pinned on first use. Raises RemoteAuditError naming the
    first problem; returns {"origin", "size", "checked_against": [sizes]} when it holds.
    """
    from ledger.models import SeenCheckpoint

    base = url.rstrip("/")
    info = _get_json(f"{base}/", token)
    body, _ = _get(f"{base}/checkpoint", token)
    note_text = body.decode(errors="replace")
    origin = info.get("origin")
    seen = list(SeenCheckpoint.objects.filter(origin=origin).order_by("size"))
    vkey = seen[0].verifier_key if seen else info.get("verifier_key")
    if seen and info.get("verifier_key") != vkey:
        raise RemoteAuditError(f"{origin}: verifier key changed since first audited")
    try:
        checkpoint = note.open_checkpoint(note_text, [vkey])
    except (note.NoteError, TypeError) as exc:
        raise RemoteAuditError(f"checkpoint: {exc}") from None
    if checkpoint.origin != origin:
        raise RemoteAuditError(f"checkpoint origin {checkpoint.origin!r} is not {origin!r}")
    # Every leaf, streamed through a compact range: constant memory. The leaf hashes also go
    # to a scratch file (32 bytes each), read again only to find a bad leaf.
    tree = merkle.CompactRange()
    with tempfile.TemporaryFile() as leaf_hashes:
        while tree.size < checkpoint.size:
            limit = min(1000, checkpoint.size - tree.size)
            page = _get_json(f"{base}/entries?start={tree.size}&limit={limit}", token)
            leaves = page.get("leaves") or []
            if page.get("start") != tree.size or not leaves:
                raise RemoteAuditError(f"entry {tree.size}: missing from the remote log")
            hashes = [merkle.leaf_hash(base64.b64decode(leaf)) for leaf in leaves]
            leaf_hashes.write(b"".join(hashes))
            tree.extend(hashes)
            if progress:
                progress(tree.size, checkpoint.size)
        if tree.root() != checkpoint.root:
            bad = _first_unproven_leaf(base, token, checkpoint, leaf_hashes)
            proven = f" (entries 0 to {bad - 1} are proven against it)" if bad else ""
            raise RemoteAuditError(
                f"entry {bad}: the leaf served is not the one in the signed tree{proven}; the "
                f"{checkpoint.size} leaves do not hash to the signed root of the checkpoint"
            )
    checked = []
    for old in seen:
        if old.size > checkpoint.size:
            raise RemoteAuditError(
                f"log shrank: checkpoint {checkpoint.size} after one of size {old.size} was seen"
            )
        if 0 < old.size < checkpoint.size:
            page = _get_json(
                f"{base}/proofs/consistency?first={old.size}&second={checkpoint.size}", token
            )
            proof = [base64.b64decode(h) for h in page.get("hashes", [])]
        else:
            proof = []
        if not merkle.verify_consistency(
            first=old.size,
            second=checkpoint.size,
            first_root=bytes(old.root_hash),
            second_root=checkpoint.root,
            proof=proof,
        ):
            raise RemoteAuditError(
                f"checkpoint {checkpoint.size} is not consistent with checkpoint {old.size} "
                "seen earlier: the log was rewritten or forked"
            )
        checked.append(old.size)
    SeenCheckpoint.objects.get_or_create(
        origin=origin,
        size=checkpoint.size,
        defaults={"verifier_key": vkey, "root_hash": checkpoint.root, "note": note_text},
    )
    return {"origin": origin, "size": checkpoint.size, "checked_against": checked}
