"""The append-only log: entries, their bundles and hash tiles, the tree head and checkpoints.

Rows are written only by ledger.services; nothing here holds logic.
"""

from django.db import models
from django.db.models import Q


class Entry(models.Model):
    """A ledger entry: the identity other records point at, and its position once sealed.

    Pending, it holds its payload (canonical JSON, "kind" included); the sequencer moves
    the payload into its EntryBundle, where it is hashed as it is, and sets the index and
    the leaf hash. The leaf hash binds the row to its leaf: a row moved to another index
    (two rows' indexes swapped) no longer matches the log there, which verify_ledger and
    every receipt check.
    """

    id = models.BigAutoField(primary_key=True)
    # Position in the Merkle tree; null while pending, assigned by the sequencer.
    index = models.BigIntegerField(null=True, unique=True)
    # Canonical JSON bytes while pending; null once sealed (the bytes are in the bundle).
    payload = models.BinaryField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sealed_at = models.DateTimeField(null=True)
    # The RFC 9162 leaf hash of the payload, set with the index; null while pending.
    leaf_hash = models.BinaryField(max_length=32, null=True)

    class Meta:
        verbose_name_plural = "entries"
        indexes = [
            # The sequencer's queue: pending rows in id order.
            models.Index(
                fields=["id"], condition=Q(index__isnull=True), name="ledger_entry_pending"
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(index__isnull=True, payload__isnull=False, sealed_at__isnull=True,
                            leaf_hash__isnull=True)
                | Q(index__gte=0, payload__isnull=True, sealed_at__isnull=False,
                    leaf_hash__isnull=False),
                name="ledger_entry_sealed_bound",
            ),
        ]

    def __str__(self):
        return f"entry {self.id} pending" if self.index is None else f"entry #{self.index}"


class EntryBundle(models.Model):
    """The payloads of sealed entries 256 index .. 256 index + 255, exactly as hashed,
    joined by newlines (a C2SP tlog-tiles entry bundle, but newline-joined where the spec
    length-prefixes: see ledger.tiles). Only the last bundle may hold fewer; it grows, its
    bytes never change."""

    index = models.BigIntegerField(primary_key=True)
    data = models.BinaryField()

    def __str__(self):
        return f"bundle {self.index}"


class HashTile(models.Model):
    """The hashes of the complete subtrees at tree level 8 level, numbered 256 index ..
    256 index + 255, concatenated (C2SP tlog-tiles hash tile); level 0 holds leaf hashes.
    Only the last tile of a level may be partial; it grows, its bytes never change."""

    pk = models.CompositePrimaryKey("level", "index")
    level = models.PositiveSmallIntegerField()
    index = models.BigIntegerField()
    hashes = models.BinaryField()

    def __str__(self):
        return f"tile {self.level}/{self.index}"


class TreeState(models.Model):
    """The single tree head (id=1): the row the sequencer locks."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    size = models.BigIntegerField(default=0)
    root_hash = models.BinaryField(max_length=32)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(id=1), name="ledger_treestate_singleton")]

    def __str__(self):
        return f"tree of {self.size}"


class Checkpoint(models.Model):
    size = models.BigIntegerField(unique=True)
    root_hash = models.BinaryField(max_length=32)
    # The complete C2SP signed note, exactly as served.
    note = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"checkpoint {self.size}"


class LogKey(models.Model):
    """The checkpoint signing key; the private half only as a JWE under the KEK."""

    name = models.CharField(max_length=255, unique=True)
    public_key = models.BinaryField(max_length=32)
    encrypted_private_key = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.name


class Member(models.Model):
    """A consortium member organisation; with a verifier key and URL it is a witness."""

    name = models.CharField(max_length=255, unique=True)
    # C2SP tlog-cosignature verifier key (type 0x04); blank for a member that only reads.
    verifier_key = models.CharField(max_length=512, blank=True)
    # The witness's submission prefix; the log POSTs <url>/add-checkpoint.
    witness_url = models.URLField(max_length=500, blank=True)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["verifier_key"], condition=~Q(verifier_key=""), name="ledger_member_key"
            ),
        ]

    def __str__(self):
        return self.name


class MemberToken(models.Model):
    """A member's API token; only its SHA-256 is stored, the token is shown once."""

    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="tokens")
    token_hash = models.BinaryField(max_length=32, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"token of {self.member}"


class Cosignature(models.Model):
    """A witness's verified C2SP cosignature/v1 line on one of our checkpoints."""

    checkpoint = models.ForeignKey(Checkpoint, on_delete=models.CASCADE, related_name="cosignatures")
    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="cosignatures")
    timestamp = models.BigIntegerField()
    line = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["checkpoint", "member"], name="ledger_cosig_once"),
        ]

    def __str__(self):
        return f"{self.member} on {self.checkpoint}"


class WitnessRefusal(models.Model):
    """A witness refused one of our checkpoints: kept for the ethics dashboard."""

    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="refusals")
    size = models.BigIntegerField()
    root_hash = models.BinaryField(max_length=32)
    status = models.PositiveSmallIntegerField()
    detail = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"{self.member} refused {self.size} ({self.status})"


class SeenCheckpoint(models.Model):
    """A remote log's checkpoint verified by `verify_ledger --remote`, to check it later."""

    origin = models.CharField(max_length=255)
    verifier_key = models.CharField(max_length=512)
    size = models.BigIntegerField()
    root_hash = models.BinaryField(max_length=32)
    note = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["origin", "size"], name="ledger_seen_once"),
        ]

    def __str__(self):
        return f"{self.origin} at {self.size}"


class EntryOpenings(models.Model):
    """The openings of a blinded entry's commitments (ledger.blinding): {field: {"value",
    "salt"}}. Off the ledger, so erasure can delete them: the entry stays verifiable and
    becomes unlinkable. `subject` groups the openings erasure deletes together (the
    participant's pseudonym, where the entry is about one); empty where none is."""

    entry = models.OneToOneField(Entry, primary_key=True, on_delete=models.CASCADE, related_name="openings")
    subject = models.CharField(max_length=64, blank=True, db_index=True)
    openings = models.JSONField()

    class Meta:
        verbose_name_plural = "entry openings"

    def __str__(self):
        return f"openings of entry {self.entry_id}"
