"""Load the consent benchmark's data set into the database DATABASE_URL names.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_consent \
        .venv/bin/python -m bench.consent.load --participants 100000 --samples-per-participant 10

Each participant gets a real did:key (a fresh Ed25519 key whose private half is thrown
away, as for a participant holding their own key), five consents (general research revoked
a year ago and granted again, health research, diabetes research suspended for one in five,
non-commercial research), an event per change and its ledger entry, sealed into the real
Merkle tree, and ten samples at one custodian.

Credentials: issuing a didkit credential costs ~25 ms, so 500,000 would take hours. The
participants whose samples the benchmark asks about (--hot) get every consent credential
issued for real through identity.services; the others' consents name credential ids with
no stored document, which the benchmark never reads. results.md says so.
"""

import argparse
import base64
import random
import sys
import time
import uuid
from datetime import timedelta

from bench._django import setup

setup()

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from consent_portal import demo, selectors, services  # noqa: E402
from consent_portal.models import Consent, ConsentEvent, Participant, Purpose, Sample  # noqa: E402
from identity import didkit_backend  # noqa: E402
from identity import services as identity_services  # noqa: E402
from ledger.canonical import canonical_json  # noqa: E402
from ledger.models import Entry  # noqa: E402
from ledger.services import ledger_seal_pending  # noqa: E402

BENCH_CUSTODIAN = "Bench biobank"
BENCH_TOKEN = "bench-custodian-token"
BATCH = 5000


def progress(label: str, done: int, total: int, started: float) -> None:
    width = 30
    filled = int(width * done / total) if total else width
    rate = done / max(time.monotonic() - started, 1e-9)
    sys.stderr.write(f"\r{label:<12} [{'#' * filled}{'.' * (width - filled)}] {done:>9,}/{total:,} {rate:,.0f}/s")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def new_did() -> str:
    public = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    x = base64.urlsafe_b64encode(public).decode().rstrip("=")
    return didkit_backend.did_key_from_jwk(f'{{"kty":"OKP","crv":"Ed25519","x":"{x}"}}')


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--participants", type=int, default=100_000)
    parser.add_argument("--samples-per-participant", type=int, default=10)
    parser.add_argument("--hot", type=int, default=400, help="participants whose credentials are issued for real")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    if Participant.objects.exists():
        sys.exit("The database already holds participants; load into an empty one.")
    demo.diseases_load()
    demo.purposes_load()
    purposes = {p.slug: p for p in Purpose.objects.all()}
    study = services.study_submit(identifier="bench-hmb", title="Bench study", institution="Bench University",
                                  commercial=False, uses=[{"permission": "DUO:0000006"}])
    services.study_use_decide(use_id=study.uses.get().pk, approve=True, member=None)
    custodian, _ = services.custodian_create(name=BENCH_CUSTODIAN, token=BENCH_TOKEN)

    started = time.monotonic()
    for start in range(0, args.participants, BATCH):
        rows = [Participant(did=new_did(), enrolment_credential_id="") for _ in range(min(BATCH, args.participants - start))]
        Participant.objects.bulk_create(rows)
        progress("participants", start + len(rows), args.participants, started)
    participant_ids = list(Participant.objects.order_by("pk").values_list("pk", "pseudonym", "did"))
    hot = set(pid for pid, _, _ in rng.sample(participant_ids, args.hot))

    now = timezone.now()
    year_ago = now - timedelta(days=365)
    plan = [  # (purpose, state, granted_at, events)
        ("general-research", Consent.REVOKED, year_ago, ["grant", "revoke"]),
        ("general-research", Consent.GRANTED, now - timedelta(days=30), ["grant"]),
        ("health-medical-research", Consent.GRANTED, year_ago, ["grant"]),
        ("diabetes-research", None, year_ago, None),  # suspended for one in five
        ("general-research-non-commercial", Consent.GRANTED, year_ago, ["grant"]),
    ]
    total = len(participant_ids) * len(plan)
    done, started = 0, time.monotonic()
    for start in range(0, len(participant_ids), BATCH // len(plan)):
        chunk = participant_ids[start:start + BATCH // len(plan)]
        consents, events, entries = [], [], []
        for pid, pseudonym, did in chunk:
            for slug, state, granted_at, actions in plan:
                if state is None:
                    state, actions = (Consent.SUSPENDED, ["grant", "suspend"]) if rng.random() < 0.2 else (
                        Consent.GRANTED, ["grant"])
                purpose = purposes[slug]
                if pid in hot:
                    credential_id = identity_services.credential_issue(
                        subject_did=did, credential_type="ConsentCredential",
                        claims=selectors.purpose_claims(purpose=purpose),
                    ).id
                    if state == Consent.REVOKED:
                        identity_services.credential_revoke(credential_id=credential_id)
                    elif state == Consent.SUSPENDED:
                        identity_services.credential_suspend(credential_id=credential_id)
                else:
                    credential_id = f"urn:uuid:{uuid.uuid4()}"
                consent = Consent(participant_id=pid, purpose=purpose, state=state, credential_id=credential_id,
                                  granted_at=granted_at, updated_at=granted_at)
                consents.append(consent)
                for step, action in enumerate(actions):
                    at = granted_at + timedelta(seconds=step)
                    after = {"grant": "granted", "revoke": "revoked", "suspend": "suspended"}[action]
                    payload = {"type": "consent.event", "participant": str(pseudonym), "purpose": slug,
                               "permission": purpose.permission_id, "action": action, "state": after,
                               "credential": credential_id, "at": at.isoformat(), "kind": f"consent.{action}"}
                    entries.append(Entry(payload=canonical_json(payload)))
                    events.append((consent, action, after, at))
        with transaction.atomic():
            Consent.objects.bulk_create(consents)
            Entry.objects.bulk_create(entries)
            ConsentEvent.objects.bulk_create([
                ConsentEvent(consent=consent, action=action, state_after=after, created_at=at, ledger_entry=entry,
                             signed_by="bench-loader")
                for (consent, action, after, at), entry in zip(events, entries, strict=True)
            ])
        done += len(consents)
        progress("consents", done, total, started)

    total = len(participant_ids) * args.samples_per_participant
    done, started = 0, time.monotonic()
    rows = []
    for pid, _, _ in participant_ids:
        for n in range(args.samples_per_participant):
            rows.append(Sample(custodian=custodian, identifier=f"P{pid}-S{n}", participant_id=pid,
                               kind=("blood", "saliva", "dna", "serum", "tissue")[n % 5]))
        if len(rows) >= BATCH:
            Sample.objects.bulk_create(rows)
            done += len(rows)
            rows = []
            progress("samples", done, total, started)
    if rows:
        Sample.objects.bulk_create(rows)
        progress("samples", total, total, started)

    started = time.monotonic()
    sealed = ledger_seal_pending()
    sys.stderr.write(f"sealed {sealed:,} ledger entries in {time.monotonic() - started:.1f} s\n")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    print(f"loaded {len(participant_ids):,} participants, {Consent.objects.count():,} consents, "
          f"{Sample.objects.count():,} samples, {Entry.objects.count():,} ledger entries")


if __name__ == "__main__":
    main()
