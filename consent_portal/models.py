"""The consent domain: participants, purposes, consents and their events, studies,
custodians, samples and the custodians' consent checks.

Rows here are written only through consent_portal.services; models hold no business logic.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _


class DuoTerm(models.Model):
    """A GA4GH Data Use Ontology term, keyed by its id (labels change between releases)."""

    PERMISSION = "permission"
    MODIFIER = "modifier"
    ROOT = "root"

    id = models.CharField(primary_key=True, max_length=16)  # "DUO:0000042"
    shorthand = models.CharField(max_length=16, blank=True)
    label = models.CharField(max_length=200)
    description = models.TextField()
    kind = models.CharField(
        max_length=12, choices=[(PERMISSION, "permission"), (MODIFIER, "modifier"), (ROOT, "root")]
    )

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"{self.id} {self.shorthand or self.label}"


class Disease(models.Model):
    """A disease term (MONDO ids) with its parent, so a consent to research on a disease
    covers research on its sub-diseases."""

    id = models.CharField(primary_key=True, max_length=32)  # "MONDO:0005015"
    label = models.CharField(max_length=200)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")

    def __str__(self):
        return f"{self.id} {self.label}"


class Purpose(models.Model):
    """Something a participant can consent to: one DUO permission (with a disease for DS),
    narrowed by zero or more DUO modifiers."""

    slug = models.SlugField(unique=True)
    title = models.CharField(max_length=200)
    explanation = models.TextField(help_text="What this consent allows, in plain language.")
    permission = models.ForeignKey(
        DuoTerm, on_delete=models.PROTECT, related_name="+", limit_choices_to={"kind": "permission"}
    )
    # For DUO:0000007 (disease specific research): the disease, e.g. MONDO:0005015.
    disease_id = models.CharField(max_length=32, blank=True)
    disease_label = models.CharField(max_length=200, blank=True)
    modifiers = models.ManyToManyField(
        DuoTerm, blank=True, related_name="+", limit_choices_to={"kind": "modifier"}
    )
    # Parameters of modifiers that need them, keyed by DUO id, e.g.
    # {"DUO:0000022": {"countries": ["GB"]}, "DUO:0000025": {"months": 60}}.
    # consent_portal.decisions.MODIFIER_PARAMS says which modifier takes what.
    modifier_params = models.JSONField(default=dict, blank=True)
    position = models.PositiveSmallIntegerField(default=0)
    # A purpose limited to one study (DUO:0000027, project specific, whose parameter names
    # the study): made when a participant answers a study's request "this study only". It
    # is not offered in the general catalogue, only to whoever holds or is asked for it.
    study = models.ForeignKey(
        "Study", null=True, blank=True, on_delete=models.PROTECT, related_name="study_purposes"
    )

    class Meta:
        ordering = ["position", "slug"]

    def __str__(self):
        return self.title


class Participant(models.Model):
    """A biobank donor. `pseudonym` is the only identifier that leaves this app (ledger
    entries, credentials); the link from it to a person is `user`, which erasure removes."""

    pseudonym = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="participant"
    )
    # The DID new credentials name: the custodial key, or the newest key the participant
    # registered from a browser. Every key, live or retired, is in identity.DidKey (holder =
    # pseudonym).
    did = models.CharField(max_length=200, unique=True)
    PORTAL_CUSTODY = "portal"
    SELF_CUSTODY = "participant"
    CUSTODY = [(PORTAL_CUSTODY, "the portal holds the key"), (SELF_CUSTODY, "the participant holds the key")]
    # With a self-held key, the portal refuses any decision the participant did not sign.
    key_custody = models.CharField(max_length=12, choices=CUSTODY, default=PORTAL_CUSTODY)
    enrolment_credential_id = models.CharField(max_length=100)
    enrolled_at = models.DateTimeField(auto_now_add=True)
    # The withdrawal in force: the highest level withdrawn at since the participant last
    # rejoined ("" when none). Written only by participant_withdraw and participant_rejoin.
    withdrawal_level = models.CharField(max_length=12, blank=True, default="")

    def __str__(self):
        return str(self.pseudonym)


class Consent(models.Model):
    GRANTED = "granted"
    SUSPENDED = "suspended"
    REVOKED = "revoked"
    STATES = [(GRANTED, _("granted")), (SUSPENDED, _("suspended")), (REVOKED, _("revoked"))]

    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="consents")
    purpose = models.ForeignKey(Purpose, on_delete=models.PROTECT, related_name="consents")
    state = models.CharField(max_length=10, choices=STATES)
    credential_id = models.CharField(max_length=100, unique=True)
    granted_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    # When a suspension ends by itself; swept by beat (consent_portal.tasks).
    suspended_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # Revocation is final; re-consent is a new Consent with a new credential.
            models.UniqueConstraint(
                fields=["participant", "purpose"],
                condition=~Q(state="revoked"),
                name="one_live_consent_per_purpose",
            )
        ]


class ConsentEvent(models.Model):
    GRANT = "grant"
    SUSPEND = "suspend"
    RESUME = "resume"
    REVOKE = "revoke"
    ACTIONS = [(GRANT, "grant"), (SUSPEND, "suspend"), (RESUME, "resume"), (REVOKE, "revoke")]

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    consent = models.ForeignKey(Consent, on_delete=models.CASCADE, related_name="events")
    action = models.CharField(max_length=10, choices=ACTIONS)
    state_after = models.CharField(max_length=10, choices=Consent.STATES)
    # Who signed the decision: "participant-key" (their browser), "portal-custodial-key"
    # (the portal, on their behalf, and it says so), or the system ("scheduled-resume") for
    # changes that are not a decision of that moment. A revocation caused by a withdrawal
    # carries the withdrawal's signature; events written before withdrawals were signed say
    # "withdrawal".
    PARTICIPANT_KEY = "participant-key"
    CUSTODIAL_KEY = "portal-custodial-key"
    signed_by = models.CharField(max_length=20, default=CUSTODIAL_KEY)
    # The signed decision, a JWT VP (identity.services.presentation_redeem checked it); its
    # SHA-256 is in the ledger entry's payload.
    decision_jwt = models.TextField(blank=True, default="")
    created_at = models.DateTimeField()
    ledger_entry = models.OneToOneField("ledger.Entry", on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["-created_at"]


class Study(models.Model):
    identifier = models.SlugField(max_length=64, unique=True)
    title = models.CharField(max_length=300)
    institution = models.CharField(max_length=300)
    commercial = models.BooleanField(default=False, help_text="Commercial use of the data (NCU).")
    for_profit = models.BooleanField(default=False, help_text="A for-profit organisation (NPU).")
    countries = models.JSONField(default=list, help_text="ISO 3166-1 alpha-2 codes where data is used (GS).")
    collaborators = models.JSONField(default=list, help_text="Named collaborating investigators (COL).")
    investigators = models.JSONField(default=list, help_text="Users who will access the data (US).")
    irb_reference = models.CharField(max_length=200, blank=True, help_text="Local IRB/ERB approval (IRB).")
    will_publish = models.BooleanField(default=False, help_text="Results will be published (PUB).")
    returns_derived_data = models.BooleanField(default=False, help_text="Derived data returned (RTN).")
    methods_development = models.BooleanField(default=False, help_text="Develops methods or software (NMDS).")
    summary = models.TextField(blank=True)
    submitted_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-submitted_at"]
        verbose_name_plural = "studies"

    def __str__(self):
        return self.identifier


class StudyUse(models.Model):
    """One DUO use a study asks for, approved or rejected by the ethics committee."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    STATUSES = [(PENDING, "pending"), (APPROVED, "approved"), (REJECTED, "rejected")]

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="uses")
    permission = models.ForeignKey(
        DuoTerm, on_delete=models.PROTECT, related_name="+", limit_choices_to={"kind": "permission"}
    )
    disease_id = models.CharField(max_length=32, blank=True)
    disease_label = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=10, choices=STATUSES, default=PENDING)
    # An approval lasts until this date; a study past it receives no permit.
    expires_on = models.DateField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    # When participants were asked about this approved use (consent_requests_create ran to
    # its end): the outbox the beat sweep reads, so a lost task still asks them.
    requests_sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["study", "permission", "disease_id"], name="one_use_per_study_term"
            )
        ]


class Custodian(models.Model):
    """A data custodian (biobank, sequencing lab) calling the API with a bearer token."""

    name = models.CharField(max_length=200, unique=True)
    token_hash = models.CharField(max_length=64, unique=True)  # SHA-256 hex of the token
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    # DRF treats the authenticated custodian as request.user.
    is_authenticated = True
    is_anonymous = False

    def __str__(self):
        return self.name


class Enrolment(models.Model):
    """A participant enrolled with a custodian, at collection, by redeeming the participant's
    one-time donation code: the only way a custodian may register samples for them. Knowing
    a participant code is not enough. `reference` is what this custodian calls the
    participant; it means nothing to any other custodian."""

    custodian = models.ForeignKey(Custodian, on_delete=models.PROTECT, related_name="enrolments")
    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="enrolments")
    reference = models.CharField(max_length=32, unique=True)
    created_at = models.DateTimeField()
    # Its `participant.enrolled_with` ledger entry (blinded); null for enrolments made
    # before enrolments were recorded on the ledger.
    ledger_entry = models.OneToOneField(
        "ledger.Entry", null=True, blank=True, on_delete=models.PROTECT, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["custodian", "participant"], name="one_enrolment_per_custodian")
        ]


class DonationCode(models.Model):
    """A one-time code a participant hands to the biobank that collects their sample; stored
    only as its SHA-256. It works once, until it expires, for one custodian."""

    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="donation_codes")
    code_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    enrolment = models.ForeignKey(Enrolment, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")


class Sample(models.Model):
    """A sample held by a custodian, identified by the custodian's own sample code."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    custodian = models.ForeignKey(Custodian, on_delete=models.PROTECT, related_name="samples")
    identifier = models.CharField(max_length=100)
    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="samples")
    kind = models.CharField(max_length=40)
    registered_at = models.DateTimeField(auto_now_add=True)
    # When a withdrawal at no further access or use reached this sample (or, for a sample
    # registered while the participant was withdrawn, its registration): no check permits
    # it again, whatever the participant grants later. Rejoining covers only new samples.
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    # When the custodian confirmed its destruction: denied for ever.
    destroyed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["custodian", "identifier"], name="sample_per_custodian")
        ]


class ConsentCheck(models.Model):
    """A custodian's question and the portal's answer, kept with the evidence given."""

    PERMIT = "permit"
    DENY = "deny"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    custodian = models.ForeignKey(Custodian, on_delete=models.PROTECT, related_name="checks")
    sample_identifier = models.CharField(max_length=100)
    study_identifier = models.CharField(max_length=64)
    purpose_id = models.CharField(max_length=16)
    decision = models.CharField(max_length=6, choices=[(PERMIT, "permit"), (DENY, "deny")])
    reasons = models.JSONField()
    evidence = models.JSONField()
    created_at = models.DateTimeField()
    ledger_entry = models.OneToOneField("ledger.Entry", on_delete=models.PROTECT, related_name="+")
    # The custodian's Idempotency-Key header, if it sent one: a retry with the same key gets
    # this check's answer again instead of recording a second check.
    idempotency_key = models.CharField(max_length=128, null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["custodian", "idempotency_key"], name="one_check_per_idempotency_key",
                                    condition=models.Q(idempotency_key__isnull=False)),
        ]


class ConsentRequest(models.Model):
    """An approved study use asking a participant who has not granted it (dynamic consent).

    The study sees how many answered; who refused stays here."""

    OPEN = "open"
    GRANTED = "granted"
    DECLINED = "declined"
    # Closed by itself: a consent given by other means (the consents page, another
    # request) came to cover the use.
    COVERED = "covered"
    STATUSES = [(OPEN, "open"), (GRANTED, "granted"), (DECLINED, "declined"), (COVERED, "covered")]

    use = models.ForeignKey(StudyUse, on_delete=models.CASCADE, related_name="requests")
    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="requests")
    # The standing purpose exactly as the use asks (its permission and disease, nothing
    # broader), and the purpose limited to this study; a yes grants one of the two.
    purpose = models.ForeignKey(Purpose, on_delete=models.PROTECT, related_name="+")
    study_purpose = models.ForeignKey(Purpose, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=10, choices=STATUSES, default=OPEN)
    created_at = models.DateTimeField(auto_now_add=True)
    answered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["use", "participant"], name="one_request_per_use_participant")
        ]


class Withdrawal(models.Model):
    """A participant's withdrawal, at one of the levels large biobanks offer."""

    NO_CONTACT = "no_contact"
    NO_ACCESS = "no_access"
    NO_USE = "no_use"
    # In this order: a withdrawal can only go up it (until the participant rejoins).
    LEVELS = [
        (NO_CONTACT, _("No further contact")),
        (NO_ACCESS, _("No further access (data already shared stays)")),
        (NO_USE, _("No further use (samples and data destroyed)")),
    ]
    RANK = {NO_CONTACT: 1, NO_ACCESS: 2, NO_USE: 3}
    # The levels that stop every release of the samples registered before them.
    STOPS_ACCESS = frozenset({NO_ACCESS, NO_USE})

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="withdrawals")
    level = models.CharField(max_length=12, choices=LEVELS)
    created_at = models.DateTimeField()
    # Who signed the withdrawal, as on ConsentEvent: "participant-key" (their browser) or
    # "portal-custodial-key" (the portal, on their behalf). The consents it revokes carry the
    # same signature. Withdrawals recorded before they were signed say "portal-session".
    SESSION_ONLY = "portal-session"
    signed_by = models.CharField(max_length=20)
    # The signed decision, a JWT VP over {type: WithdrawalDecision, participant, level, nonce,
    # issued_at, domain}; its SHA-256 is in the ledger entry's payload.
    decision_jwt = models.TextField(blank=True, default="")
    ledger_entry = models.OneToOneField("ledger.Entry", on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["-created_at"]


class WithdrawalInstruction(models.Model):
    """What one custodian must do for one sample after a withdrawal, in feed order."""

    STOP_ACCESS = "stop_access"
    DESTROY = "destroy"
    ACTIONS = [(STOP_ACCESS, _("stop access")), (DESTROY, _("destroy sample and data"))]

    # The feed cursor: custodians read ?since=<seq>.
    seq = models.BigAutoField(primary_key=True)
    withdrawal = models.ForeignKey(Withdrawal, on_delete=models.CASCADE, related_name="instructions")
    sample = models.ForeignKey(Sample, on_delete=models.CASCADE, related_name="instructions")
    action = models.CharField(max_length=12, choices=ACTIONS)
    created_at = models.DateTimeField()
    confirmed_at = models.DateTimeField(null=True, blank=True)
    confirmation_entry = models.OneToOneField(
        "ledger.Entry", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # A later, stronger instruction for the same sample (destroy after stop access) closes
    # this one unconfirmed: the custodian carries out the later one.
    superseded_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="supersedes"
    )

    @property
    def status(self) -> str:
        if self.confirmed_at is not None:
            return "confirmed"
        return "superseded" if self.superseded_by_id is not None else "open"


class Rejoin(models.Model):
    """A participant who withdrew comes back: a signed decision of its own. It ends the
    withdrawal in force; samples registered before it stay withdrawn (Sample.withdrawn_at)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    participant = models.ForeignKey(Participant, on_delete=models.CASCADE, related_name="rejoins")
    # The level in force when the participant rejoined.
    ended_level = models.CharField(max_length=12, choices=Withdrawal.LEVELS)
    created_at = models.DateTimeField()
    signed_by = models.CharField(max_length=20)
    # The signed decision, a JWT VP over {type: RejoinDecision, participant, ...}; its SHA-256
    # is in the ledger entry's payload.
    decision_jwt = models.TextField(blank=True, default="")
    ledger_entry = models.OneToOneField("ledger.Entry", on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["-created_at"]


class BulkCheck(models.Model):
    """A custodian's bulk question; the ledger entry carries the digest of every answer."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    custodian = models.ForeignKey(Custodian, on_delete=models.PROTECT, related_name="bulk_checks")
    study_identifier = models.CharField(max_length=64)
    purpose_id = models.CharField(max_length=16)
    count = models.PositiveIntegerField()
    permits = models.PositiveIntegerField()
    results_sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField()
    ledger_entry = models.OneToOneField("ledger.Entry", on_delete=models.PROTECT, related_name="+")


class Erasure(models.Model):
    """Right to erasure: the person behind a pseudonym is gone; the pseudonym stays unlinked."""

    participant = models.OneToOneField(Participant, on_delete=models.CASCADE, related_name="erasure")
    erased_at = models.DateTimeField()
