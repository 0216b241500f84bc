"""The append-only log: entries, the stored Merkle subtrees, the tree head and checkpoints.

Rows are written only by ledger.services; nothing here holds logic.
"""

from django.db import models
from django.db.models import Q


class Entry(models.Model):
    id = models.BigAutoField(primary_key=True)
    # Position in the Merkle tree; null while pending, assigned by the sequencer.
    index = models.BigIntegerField(null=True, unique=True)
    kind = models.CharField(max_length=64)
    # Canonical JSON bytes, hashed as they are: never re-encode them.
    payload = models.BinaryField()
    leaf_hash = models.BinaryField(max_length=32, null=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sealed_at = models.DateTimeField(null=True)

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
                condition=Q(index__isnull=True, leaf_hash__isnull=True, sealed_at__isnull=True)
                | Q(index__gte=0, leaf_hash__isnull=False, sealed_at__isnull=False),
                name="ledger_entry_sealed_together",
            ),
        ]

    def __str__(self):
        where = "pending" if self.index is None else f"#{self.index}"
        return f"{self.kind} {where}"


class TreeNode(models.Model):
    """The hash of the complete subtree of 2**level leaves starting at leaf index * 2**level.

    Level 0 repeats the leaf hashes so that a proof is one lookup in one table.
    """

    pk = models.CompositePrimaryKey("level", "index")
    level = models.PositiveSmallIntegerField()
    index = models.BigIntegerField()
    hash = models.BinaryField(max_length=32)

    def __str__(self):
        return f"node {self.level}/{self.index}"


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
