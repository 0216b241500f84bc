"""DIDs, the issuer's keys, issued credentials and their status lists.

Private keys are stored only as JWEs under the key-encryption key (identity.keys). Rows
are written by identity.services only.
"""

import hashlib

from django.db import models
from django.db.models import Q

from identity import statuslist, vocabulary


class IssuerKey(models.Model):
    """A key the portal signs credentials and status lists with.

    Exactly one is active; rotation (services.issuer_rotate) deactivates it and adds a new
    one. The trust configuration is the set of rows with trusted=True: a rotated-out key stays
    trusted, so credentials it signed still verify, until an operator withdraws trust from it
    (a compromised key).
    """

    did = models.CharField(max_length=255, unique=True)
    verification_method = models.CharField(max_length=512)
    encrypted_jwk = models.TextField()
    active = models.BooleanField(default=True)
    trusted = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["active"], condition=Q(active=True), name="identity_one_active_issuer_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.did}{' (active)' if self.active else ''}"


class DidKey(models.Model):
    """A participant's did:key.

    Custodial keys (Ed25519) are held by the portal, encrypted; self-held keys (P-256, made
    by the participant's browser) have no private part here at all, so the portal cannot sign
    with them. `holder` is an opaque reference the caller chooses (the consent app uses the
    participant's pseudonym); identity does not know what it points to. A retired key signs
    nothing more: a lost device, or a custodial key given up for a self-held one (its
    private part is then erased).
    """

    class Custody(models.TextChoices):
        PORTAL = "portal", "held by the portal"
        PARTICIPANT = "participant", "held by the participant"

    did = models.CharField(max_length=255, unique=True)
    encrypted_jwk = models.TextField(blank=True, default="")
    custody = models.CharField(max_length=16, choices=Custody.choices, default=Custody.PORTAL)
    holder = models.CharField(max_length=64, blank=True, default="", db_index=True)
    label = models.CharField(max_length=80, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    retired_at = models.DateTimeField(null=True, blank=True)

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
    # keys.attestation_mac of the signed document's digest, written at issuance: lets a
    # verification of this stored document skip re-checking the proof (selectors._signature).
    # Empty for credentials issued before it existed; those are checked with didkit.
    proof_mac = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        ordering = ["issued_at"]

    def __str__(self) -> str:
        return self.id


class Challenge(models.Model):
    """A one-time nonce for a DID Auth or signed-decision presentation.

    `expected` is what the presentation must carry, exactly (the decision payload the server
    built), or empty for DID Auth. `bound_to` is the caller's opaque reference to who asked
    (the participant's pseudonym), so one person's nonce is useless to another. Used
    challenges are kept: used_at is what makes a replay fail.
    """

    class Purpose(models.TextChoices):
        DID_AUTH = "did-auth", "register a key (DID Auth)"
        DECISION = "decision", "sign a consent decision"

    nonce = models.CharField(max_length=64, unique=True)
    purpose = models.CharField(max_length=16, choices=Purpose.choices)
    bound_to = models.CharField(max_length=64)
    expected = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.purpose} {self.nonce}"


class SeenChallenge(models.Model):
    """A challenge a presentation submitted to the verification API carried and passed.

    The API remembers (domain, challenge) pairs so the same presentation, or another one
    answering the same challenge, is refused the second time (replay).
    """

    digest = models.CharField(max_length=64, unique=True)  # sha256(domain \n challenge)
    seen_at = models.DateTimeField(auto_now_add=True)

    @staticmethod
    def digest_of(domain: str, challenge: str) -> str:
        return hashlib.sha256(f"{domain}\n{challenge}".encode()).hexdigest()
