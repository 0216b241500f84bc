"""DIDs, the issuer's keys, issued credentials and their status lists.

Private keys are stored only as JWEs under the key-encryption key (identity.keys). Rows
are written by identity.services only.
"""

from django.db import models
from django.db.models import Q

from identity import statuslist, vocabulary


class IssuerKey(models.Model):
    """A key the portal signs credentials and status lists with.

    Exactly one is active; rotation deactivates it and adds a new one. Every row, active or
    not, is trusted, so credentials signed by an earlier key still verify.
    """

    did = models.CharField(max_length=255, unique=True)
    verification_method = models.CharField(max_length=512)
    encrypted_jwk = models.TextField()
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["active"], condition=Q(active=True), name="identity_one_active_issuer_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.did}{' (active)' if self.active else ''}"


class DidKey(models.Model):
    """A participant's did:key. For now the portal holds the key (custodial)."""

    class Custody(models.TextChoices):
        PORTAL = "portal", "held by the portal"

    did = models.CharField(max_length=255, unique=True)
    encrypted_jwk = models.TextField()
    custody = models.CharField(max_length=16, choices=Custody.choices, default=Custody.PORTAL)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.did


class StatusList(models.Model):
    """One StatusList2021 bitstring and the credential that publishes it, signed."""

    class Purpose(models.TextChoices):
        REVOCATION = vocabulary.REVOCATION, "revocation"
        SUSPENSION = vocabulary.SUSPENSION, "suspension"

    purpose = models.CharField(max_length=16, choices=Purpose.choices)
    number = models.PositiveIntegerField(default=1)
    bits = models.BinaryField(default=statuslist.empty)
    # The signed StatusList2021Credential exactly as served; empty until first signed.
    credential = models.TextField(blank=True, default="")
    etag = models.CharField(max_length=80, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["purpose", "number"], name="identity_status_list_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.purpose} list {self.number}"


class IssuedCredential(models.Model):
    class Type(models.TextChoices):
        ENROLMENT = vocabulary.ENROLMENT_CREDENTIAL, "enrolment"
        CONSENT = vocabulary.CONSENT_CREDENTIAL, "consent"

    id = models.CharField(max_length=64, primary_key=True)  # "urn:uuid:..."
    subject_did = models.CharField(max_length=255, db_index=True)
    type = models.CharField(max_length=32, choices=Type.choices)
    issuer_key = models.ForeignKey(IssuerKey, on_delete=models.PROTECT, related_name="credentials")
    document = models.JSONField()
    # The same index in the revocation and the suspension list.
    status_index = models.PositiveIntegerField(unique=True)
    issued_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["issued_at"]

    def __str__(self) -> str:
        return self.id
