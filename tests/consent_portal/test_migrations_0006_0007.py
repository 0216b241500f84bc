"""Migrations consent_portal 0006 and 0007: what withdrawals made before 0006 meant is written where
checks read it, so an existing database denies what it should from the first request; custodians
that registered samples before enrolment existed are enrolled with those participants."""

from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

BEFORE = [("consent_portal", "0005_withdrawal_signature")]
AFTER = [("consent_portal", "0006_withdrawal_holds")]


def migrate(target):
    executor = MigrationExecutor(connection)
    executor.migrate(target)
    return executor.loader.project_state(target).apps


@pytest.fixture
def at_0005(transactional_db):
    apps = migrate(BEFORE)
    try:
        yield apps
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())


def test_earlier_withdrawals_hold_back_their_samples_after_the_migration(at_0005):
    apps = at_0005
    model = {name: apps.get_model("consent_portal", name)
             for name in ("Participant", "Custodian", "Sample", "Withdrawal", "WithdrawalInstruction")}
    # The ledger stays at its newest migration: its entries are written with today's model.
    from ledger.models import Entry

    now = timezone.now()
    custodian = model["Custodian"].objects.create(name="Lab", token_hash="0" * 64)
    donor, stays = (model["Participant"].objects.create(did=f"did:example:{n}", enrolment_credential_id=f"urn:{n}")
                    for n in ("donor", "stays"))
    samples = {name: model["Sample"].objects.create(custodian=custodian, identifier=name, participant=p, kind="blood")
               for name, p in (("S-1", donor), ("S-2", donor), ("S-other", stays))}
    model["Sample"].objects.filter(identifier__in=["S-1", "S-2", "S-other"]).update(registered_at=now - timedelta(days=9))

    def withdraw(participant, level, at):
        return model["Withdrawal"].objects.create(
            participant=participant, level=level, created_at=at, signed_by="portal-session",
            ledger_entry_id=Entry.objects.create(payload=b"{}").pk)

    contact = withdraw(stays, "no_contact", now - timedelta(days=3))
    access = withdraw(donor, "no_access", now - timedelta(days=5))
    use = withdraw(donor, "no_use", now - timedelta(days=2))
    stop_1, stop_2 = (model["WithdrawalInstruction"].objects.create(
        withdrawal=access, sample=samples[s], action="stop_access", created_at=access.created_at) for s in ("S-1", "S-2"))
    destroy_1, destroy_2 = (model["WithdrawalInstruction"].objects.create(
        withdrawal=use, sample=samples[s], action="destroy", created_at=use.created_at) for s in ("S-1", "S-2"))
    model["WithdrawalInstruction"].objects.filter(pk=destroy_1.pk).update(confirmed_at=now - timedelta(days=1))
    # The earlier code let a participant withdraw at no further use twice (a second open
    # destroy for S-1, destroyed already) and register a sample after withdrawing (S-3,
    # which a consent granted again would have permitted).
    use_again = withdraw(donor, "no_use", now - timedelta(hours=20))
    destroy_again = model["WithdrawalInstruction"].objects.create(
        withdrawal=use_again, sample=samples["S-1"], action="destroy", created_at=use_again.created_at)
    late = model["Sample"].objects.create(custodian=custodian, identifier="S-3", participant=donor, kind="blood")
    model["Sample"].objects.filter(pk=late.pk).update(registered_at=now - timedelta(days=1))
    assert contact.pk

    apps = migrate(AFTER)
    Participant, Sample, Instruction = (apps.get_model("consent_portal", n)
                                        for n in ("Participant", "Sample", "WithdrawalInstruction"))
    assert Participant.objects.get(pk=donor.pk).withdrawal_level == "no_use"
    assert Participant.objects.get(pk=stays.pk).withdrawal_level == "no_contact"
    held = {s.identifier: s for s in Sample.objects.all()}
    assert held["S-1"].withdrawn_at == access.created_at and held["S-2"].withdrawn_at == access.created_at
    assert held["S-1"].destroyed_at == now - timedelta(days=1) and held["S-2"].destroyed_at is None
    assert held["S-other"].withdrawn_at is None  # no further contact holds back nothing
    assert held["S-3"].withdrawn_at == now - timedelta(days=1)  # registered while withdrawn
    assert Instruction.objects.get(pk=destroy_again.pk).superseded_by_id == destroy_1.pk  # S-1 is destroyed
    # The stop-access instructions left open under a destroy for the same sample are closed.
    assert Instruction.objects.get(pk=stop_1.pk).superseded_by_id == destroy_1.pk
    assert Instruction.objects.get(pk=stop_2.pk).superseded_by_id == destroy_2.pk
    assert Instruction.objects.get(pk=destroy_2.pk).superseded_by_id is None


def test_custodians_holding_samples_are_enrolled_with_their_participants(transactional_db):
    apps = migrate([("consent_portal", "0006_withdrawal_holds")])
    try:
        Custodian, Participant, Sample = (apps.get_model("consent_portal", n) for n in ("Custodian", "Participant", "Sample"))
        a, b = (Custodian.objects.create(name=n, token_hash=n * 64) for n in ("a", "b"))
        p, q = (Participant.objects.create(did=f"did:example:{n}", enrolment_credential_id=f"urn:{n}") for n in "pq")
        for custodian, participant, identifier in ((a, p, "1"), (a, p, "2"), (b, p, "3"), (a, q, "4")):
            Sample.objects.create(custodian=custodian, participant=participant, identifier=identifier, kind="blood")
        apps = migrate([("consent_portal", "0007_enrolment")])
        Enrolment = apps.get_model("consent_portal", "Enrolment")
        pairs = set(Enrolment.objects.values_list("custodian_id", "participant_id"))
        assert pairs == {(a.pk, p.pk), (b.pk, p.pk), (a.pk, q.pk)}
        assert len(set(Enrolment.objects.values_list("reference", flat=True))) == 3
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
