"""Identity benchmarks: one run, prints figures, writes results.json and results.md.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/identitybench .venv/bin/python bench/identity/bench.py

- issue / verify throughput of consent credentials through our services and selectors,
  against bare didkit calls (didkit_backend.issue_credential / verify_credential: json in,
  one didkit coroutine, json out) on the same documents in the same run; target >= 0.8.
- status check of one credential against the cached, verified 131,072-entry lists: p50 < 1 ms.

Writes rows into the identity tables of the database it is given: use a database of its own.
Each run first deletes the credentials earlier runs issued (subjects with holder
"identity-bench"), so collisions on the random status index stay as rare as on a fresh list.
"""

import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "consent_portal.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from identity import didkit_backend, jsonld, selectors, services, statuslist  # noqa: E402
from identity.keys import decrypt_secret  # noqa: E402
from identity.models import DidKey, IssuedCredential  # noqa: E402

N = int(os.getenv("BENCH_N", "300"))
ROUNDS = 5  # bare and ours alternate in rounds, so drift on a shared machine hits both
CLAIMS = {"purpose": "DUO:0000042", "purposeLabel": "general research use", "study": "bench"}
OUT = Path(__file__).resolve().parent
# Throughput at saturation: this many processes issue at once, each for SATURATION_SECONDS,
# bare didkit and ours in turn. Processes, as the portal's gunicorn and Celery workers are.
SATURATION_PROCESSES = (1, 2, 4)
SATURATION_SECONDS = float(os.getenv("BENCH_SATURATION_SECONDS", "8"))
SATURATION_ROUNDS = 2
# bare didkit, ours, and bare didkit followed by storing its result (the ceiling for ours).
SATURATION_SIDES = ("bare", "services", "bare_then_store")


def per_op_ms(function, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        function()
    return (time.perf_counter() - start) / n * 1000


def p50_ms(function, n: int) -> float:
    timings = []
    for _ in range(n):
        start = time.perf_counter()
        function()
        timings.append((time.perf_counter() - start) * 1000)
    return statistics.median(timings)


def compare(bare, ours: dict, n: int) -> dict:
    """Per-second rates of bare and each of ours, measured in alternating rounds."""
    totals = {"bare": 0.0, **{name: 0.0 for name in ours}}
    per_round = max(1, n // ROUNDS)
    for _ in range(ROUNDS):
        totals["bare"] += per_op_ms(bare, per_round)
        for name, function in ours.items():
            totals[name] += per_op_ms(function, per_round)
    return {name: round(1000 * ROUNDS / total, 1) for name, total in totals.items()}


def queries(function) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        function()
    # Once psycopg has prepared a statement (identity.db), Django logs no text for it.
    return [(query["sql"] or "PREPARED").split(" ", 1)[0] for query in captured.captured_queries]


def saturation_worker(side: str, subject_did: str, sample_id: str, start_at: float, end_at: float,
                      slot: int = 0) -> None:
    """One of the processes of a saturation run: issues in a loop from start_at to end_at
    (wall clock, shared by every process of the run) and prints how many it issued."""
    issuer = services.issuer_get_or_create()
    sample = IssuedCredential.objects.get(id=sample_id)
    unsigned = {k: v for k, v in sample.document.items() if k != "proof"}
    jwk = decrypt_secret(issuer.encrypted_jwk)
    if side == "bare":
        def issue():
            didkit_backend.issue_credential(unsigned, jwk=jwk, verification_method=issuer.verification_method)
    elif side == "bare_then_store":
        # As bare_then_store in main(), with status indexes of this worker's own slot (one
        # per worker of the whole saturation run; outside the lists, deleted after the run).
        first = statuslist.LIST_BITS + 2_000_000 + slot * 100_000
        spare = iter(range(first, first + 100_000))

        def issue():
            signed = didkit_backend.issue_credential(unsigned, jwk=jwk, verification_method=issuer.verification_method)
            stored = services._credential_insert(IssuedCredential(
                id=f"urn:uuid:{uuid.uuid4()}", subject_did=subject_did, type="ConsentCredential", issuer_key=issuer,
                document=signed, status_index=next(spare), issued_at=sample.issued_at, proof_mac=""))
            if not stored:
                raise SystemExit("bare_then_store: a status index of this worker's slot was taken")
    else:
        def issue():
            services.credential_issue(subject_did=subject_did, credential_type="ConsentCredential", claims=CLAIMS)
    for _ in range(3):  # warm: the process's key, contexts, lists and event loop
        issue()
    while time.time() < start_at:
        time.sleep(0.001)
    count = 0
    while time.time() < end_at:
        issue()
        count += 1
    print(count)


def saturated_rates(subject_did: str, sample_id: str) -> dict:
    """Issuances per second with P processes at once, for each P, bare and ours in
    alternating rounds (the rate of a round is what all P processes issued, over the time)."""
    totals: dict = {}
    slots = iter(range(1000))  # each worker process of the run gets its own
    for _ in range(SATURATION_ROUNDS):
        for processes in SATURATION_PROCESSES:
            for side in SATURATION_SIDES:
                start_at = time.time() + 6  # room for every process to set up and warm
                end_at = start_at + SATURATION_SECONDS
                workers = [subprocess.Popen(
                    [sys.executable, __file__, "--saturation-worker", side, subject_did, sample_id,
                     repr(start_at), repr(end_at), str(next(slots))], stdout=subprocess.PIPE, text=True)
                    for _ in range(processes)]
                outputs = [w.communicate()[0] for w in workers]
                if any(w.returncode for w in workers):
                    raise SystemExit("a saturation worker failed")
                issued = sum(int(out.strip().splitlines()[-1]) for out in outputs)
                totals[(side, processes)] = totals.get((side, processes), 0) + issued
    rates = {side: {p: round(totals[(side, p)] / (SATURATION_SECONDS * SATURATION_ROUNDS), 1)
                    for p in SATURATION_PROCESSES} for side in SATURATION_SIDES}
    best = {side: max(rates[side].values()) for side in rates}
    return {"per_processes": {side: {str(p): r for p, r in by_p.items()} for side, by_p in rates.items()},
            "peak": best, "ratio_at_peak": round(best["services"] / best["bare"], 3),
            "ceiling_ratio_at_peak": round(best["bare_then_store"] / best["bare"], 3)}


def main() -> None:
    call_command("migrate", verbosity=0)
    # Start from the same state every run: earlier runs' credentials (only those, by their
    # subjects' holder tag) would make index collisions, and so re-signing, more likely.
    bench_dids = DidKey.objects.filter(holder="identity-bench").values_list("did", flat=True)
    IssuedCredential.objects.filter(subject_did__in=list(bench_dids)).delete()
    subject = services.did_create(holder="identity-bench")
    issuer = services.issuer_get_or_create()
    sample = services.credential_issue(subject_did=subject.did, credential_type="ConsentCredential", claims=CLAIMS)
    unsigned = {k: v for k, v in sample.document.items() if k != "proof"}
    jwk = decrypt_secret(issuer.encrypted_jwk)

    def issue():
        return services.credential_issue(
            subject_did=subject.did, credential_type="ConsentCredential", claims=CLAIMS)

    def issue_in_transaction():
        with transaction.atomic():  # as consent_grant calls it, with BEGIN and COMMIT
            return issue()

    # Warm both paths (contexts, the shape check, caches, the verified status lists).
    for _ in range(3):
        issue()
        selectors.credential_verify(document=sample.document)
        didkit_backend.verify_credential(sample.document)
    assert selectors.credential_verify(document=sample.document)["verified"]

    stored_spare = iter(range(statuslist.LIST_BITS + 1_000_000, statuslist.LIST_BITS + 2_000_000))

    def bare_then_store():
        # The ceiling for any issuer that keeps what it signs: bare didkit, then the service's
        # own prepared INSERT of the result, autocommitted (an index outside the lists).
        signed = didkit_backend.issue_credential(unsigned, jwk=jwk, verification_method=issuer.verification_method)
        if not services._credential_insert(IssuedCredential(
                id=f"urn:uuid:{uuid.uuid4()}", subject_did=subject.did, type="ConsentCredential", issuer_key=issuer,
                document=signed, status_index=next(stored_spare), issued_at=sample.issued_at, proof_mac="")):
            raise SystemExit("bare_then_store: a spare status index was taken")

    issue_rates = compare(
        lambda: didkit_backend.issue_credential(unsigned, jwk=jwk, verification_method=issuer.verification_method),
        {"services": issue, "services_in_transaction": issue_in_transaction, "bare_then_store": bare_then_store}, N)
    saturation = saturated_rates(subject.did, sample.id)

    def verify_first_time():
        # As for a document this process has not verified before: its proof is checked.
        selectors._verified_proofs.clear()
        return selectors.credential_verify(document=sample.document)

    verify_rates = compare(
        lambda: didkit_backend.verify_credential(sample.document),
        {"selectors": verify_first_time,
         "selectors_remembered": lambda: selectors.credential_verify(document=sample.document)}, N)

    trusted = selectors.trusted_issuer_dids()
    timings = []
    for _ in range(2000):
        start = time.perf_counter()
        status, _error = selectors._credential_status(sample.document, trusted)
        timings.append((time.perf_counter() - start) * 1000)
        assert status == "active"
    timings.sort()

    # What each part costs (p50, ms), to account for the difference from bare didkit.
    with connection.cursor() as cursor:
        round_trip = p50_ms(lambda: cursor.execute("SELECT 1"), 500)
    spare = iter(range(statuslist.LIST_BITS, statuslist.LIST_BITS + 100_000))

    def insert_row():  # the same row the service writes, autocommitted (index outside the list)
        IssuedCredential(id=f"urn:uuid:{uuid.uuid4()}", subject_did=subject.did, type="ConsentCredential",
                         issuer_key=issuer, document=sample.document, status_index=next(spare),
                         issued_at=sample.issued_at).save(force_insert=True)

    parts = {
        "db_round_trip_select_1": round_trip,
        "insert_credential_row_autocommit": p50_ms(insert_row, 300),
        "pyld_strict_expansion_uncached": p50_ms(lambda: jsonld.expand(sample.document), 50),
        "jsonld_check_known_shape": p50_ms(lambda: jsonld.check(sample.document), 500),
        "issuance_state_query": p50_ms(services._issuance_state, 500),
        "verification_state_query": p50_ms(selectors._verification_state, 500),
        "status_bits_from_cache": p50_ms(
            lambda: selectors._verified_lists_bits(trusted, selectors._status_list_etags()), 500),
        "decrypt_issuer_jwk": p50_ms(lambda: decrypt_secret(issuer.encrypted_jwk), 500),
        "didkit_issue": p50_ms(lambda: didkit_backend.issue_credential(
            unsigned, jwk=jwk, verification_method=issuer.verification_method), 200),
        "didkit_verify": p50_ms(lambda: didkit_backend.verify_credential(sample.document), 200),
        "service_issue": p50_ms(issue, 200),
        "service_issue_in_transaction": p50_ms(issue_in_transaction, 200),
        "selector_verify_first_time": p50_ms(verify_first_time, 200),
        "selector_verify_remembered": p50_ms(lambda: selectors.credential_verify(document=sample.document), 200),
    }
    IssuedCredential.objects.filter(status_index__gte=statuslist.LIST_BITS).delete()
    results = {
        "n": N,
        "rounds": ROUNDS,
        "credentials_in_database": IssuedCredential.objects.count(),
        "database": settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1],
        "python": platform.python_version(),
        "list_entries": statuslist.LIST_BITS,
        "issue_per_s": {"services": issue_rates["services"], "bare_didkit": issue_rates["bare"],
                        "ratio": round(issue_rates["services"] / issue_rates["bare"], 3), "target": 0.8,
                        "services_in_transaction": issue_rates["services_in_transaction"],
                        "ratio_in_transaction": round(issue_rates["services_in_transaction"] / issue_rates["bare"], 3),
                        "bare_then_store": issue_rates["bare_then_store"],
                        "ratio_bare_then_store": round(issue_rates["bare_then_store"] / issue_rates["bare"], 3)},
        "issue_saturated_per_s": {**saturation, "seconds": SATURATION_SECONDS, "rounds": SATURATION_ROUNDS,
                                  "cpus": os.cpu_count()},
        "verify_per_s": {"selectors": verify_rates["selectors"], "bare_didkit": verify_rates["bare"],
                         "ratio": round(verify_rates["selectors"] / verify_rates["bare"], 3), "target": 0.8,
                         "selectors_remembered": verify_rates["selectors_remembered"],
                         "ratio_remembered": round(verify_rates["selectors_remembered"] / verify_rates["bare"], 3)},
        "status_check_ms": {"p50": round(statistics.median(timings), 4),
                            "p99": round(timings[int(len(timings) * 0.99)], 4), "target_p50": 1.0},
        "queries": {"issue": queries(issue), "issue_in_transaction": queries(issue_in_transaction),
                    "verify": queries(lambda: selectors.credential_verify(document=sample.document)),
                    "status_check": queries(lambda: selectors._credential_status(sample.document, trusted))},
        "parts_p50_ms": {name: round(value, 4) for name, value in parts.items()},
    }
    print(json.dumps(results, indent=2))
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    def met(ok: bool) -> str:
        return "met" if ok else "MISSED"

    issue, verify, status = results["issue_per_s"], results["verify_per_s"], results["status_check_ms"]
    saturated = results["issue_saturated_per_s"]
    saturation_rows = "".join(
        f"| {p} | {saturated['per_processes']['services'][str(p)]} | {saturated['per_processes']['bare'][str(p)]} | "
        f"{round(saturated['per_processes']['services'][str(p)] / saturated['per_processes']['bare'][str(p)], 3)} | "
        f"{saturated['per_processes']['bare_then_store'][str(p)]} | "
        f"{round(saturated['per_processes']['bare_then_store'][str(p)] / saturated['per_processes']['bare'][str(p)], 3)} |\n"
        for p in SATURATION_PROCESSES)
    part_rows = "".join(f"| {name} | {value} |\n" for name, value in results["parts_p50_ms"].items())
    query_rows = "".join(
        f"| {name} | {len(sql)} | {' '.join(sql)} |\n" for name, sql in results["queries"].items())
    (OUT / "results.md").write_text(
        "# Identity benchmark results\n\n"
        f"One run, N={N} per figure in {ROUNDS} alternating rounds, {results['database']}, "
        f"Python {results['python']}. Written by bench.py; the notes below are in bench.py too.\n\n"
        "| figure | ours | bare didkit | ratio | target |\n|---|---|---|---|---|\n"
        f"| issue consent credential /s | {issue['services']} | {issue['bare_didkit']} | {issue['ratio']} | >= 0.8 ({met(issue['ratio'] >= 0.8)}) |\n"
        f"| issue, all CPUs busy (best of 1, 2, 4 processes each; see below) | {saturated['peak']['services']} | {saturated['peak']['bare']} | {saturated['ratio_at_peak']} | |\n"
        f"| bare didkit then storing, all CPUs busy (best of 1, 2, 4) /s | {saturated['peak']['bare_then_store']} | {saturated['peak']['bare']} | {saturated['ceiling_ratio_at_peak']} | (the ceiling at saturation) |\n"
        f"| issue, inside the caller's transaction /s | {issue['services_in_transaction']} | {issue['bare_didkit']} | {issue['ratio_in_transaction']} | (as consent_grant calls it) |\n"
        f"| bare didkit, then storing what it signed (our INSERT, autocommitted) /s | {issue['bare_then_store']} | {issue['bare_didkit']} | {issue['ratio_bare_then_store']} | (the ceiling for ours) |\n"
        f"| verify consent credential, first time in this process /s | {verify['selectors']} | {verify['bare_didkit']} | {verify['ratio']} | >= 0.8 ({met(verify['ratio'] >= 0.8)}) |\n"
        f"| verify the same credential again (proof remembered) /s | {verify['selectors_remembered']} | {verify['bare_didkit']} | {verify['ratio_remembered']} | |\n\n"
        f"Status check against the cached {statuslist.LIST_BITS}-entry lists: p50 {status['p50']} ms, "
        f"p99 {status['p99']} ms (target p50 < 1 ms: {met(status['p50'] < 1)}).\n\n"
        f"## Issuance throughput by number of processes\n\n{len(SATURATION_PROCESSES)} process counts, "
        f"{SATURATION_ROUNDS} rounds of {SATURATION_SECONDS:g} s each, bare and ours alternating, on {saturated['cpus']} CPUs "
        "(issuances per second, all processes together):\n\n"
        "| processes | ours /s | bare didkit /s | ratio | bare then store /s | its ratio |\n"
        "|---|---|---|---|---|---|\n" + saturation_rows +
        "\n## Queries per operation (warm)\n\nPREPARED: a statement psycopg has prepared on the connection, whose text "
        "Django's query log no longer has (issuance: the state SELECT and the INSERT).\n\n"
        "| operation | queries | statements |\n|---|---|---|\n"
        + query_rows +
        "\n## What each part costs (p50, ms)\n\n| part | ms |\n|---|---|\n" + part_rows + NOTES
    )


NOTES = """
## The issue ratio's ceiling

"Bare didkit, then storing what it signed" is the least an issuer that keeps its credentials
can do: the same didkit call, then the service's own prepared INSERT of the result in
autocommit (one round trip and one WAL flush, after the signature exists, since the row holds
it). Its ratio to bare didkit, measured in the same alternating rounds, bounds ours: while it
is under 0.8, so is any issuance that stores the credential before answering. The saturation
table measures the same ceiling with every CPU busy, where the flush waits overlap and only
CPU counts.

## Earlier runs

2026-11-28, before this table had the ceiling row: issue 101.5 /s vs 181.4 bare (0.56),
verify 0.985. 2026-11-24 (a faster day on this shared machine): issue 201.9 /s vs 371.9 bare (0.543), verify
301.1 /s vs 374.2 bare (0.805, every call checking the proof), status check p50 0.484 ms.
Before that: issue 0.23, verify 0.318, status check p50 1.05 ms (pyld on every call).

## What is cached or remembered, and why it is safe

- **Strict JSON-LD check** (`identity.jsonld.check`): a document in the exact form we issue
  is expanded with pyld the first time its claim-name shape is seen; any other document is
  expanded in full every time.
- **Verified proofs** (`identity.selectors._signature`): a proof that checked out is
  remembered by the SHA-256 of the document's canonical JSON; a changed document is checked
  afresh, failures are not remembered. The verify figure above is the first verification of
  a document in the process (the memory cleared before each call); the "again" row shows what
  remembering buys. For a credential we issued, read back from the database, the stored
  `proof_mac` (HMAC over the signed document's digest, key derived from the KEK) stands for
  the proof check; a mismatch is checked in full. Trust, expiry and status: every call.
- **Status lists** (`identity.selectors._verified_lists_bits`): signature-checked bits cached
  by (purpose, row ETag); each check reads both ETags in one prepared query; a changed ETag is
  read and verified afresh; a missing list or an untrusted issuer fails closed.
- **Issuance**: signing starts with the issuer key this process saw active last, and the one
  (prepared) query that confirms it and the lists' ETags runs while didkit signs on its own
  threads; a key rotated meanwhile means signing again before storing (tested). The row is one
  prepared `INSERT ... ON CONFLICT (status_index) DO NOTHING` (the document a bound value), in
  or out of the caller's transaction. The decrypted issuer key is kept per process; didkit
  calls reuse one event loop per thread.
- **Verification** starts didkit's proof check first and reads the trust and status state
  (one prepared query) while didkit works on its own threads.

## Why the issue ratio stays below 0.8

Bare didkit issuance does no I/O. Ours must also store the credential durably: one INSERT,
autocommitted (`insert_credential_row_autocommit`, mostly the WAL flush), which cannot start
before the signature exists, plus building the document and the attestation tag. With the
confirming query overlapped, what remains is about `service_issue - didkit_issue` in the
parts table; 0.8 of bare didkit allows `didkit_issue / 4`. On this machine the insert alone
takes most of that allowance, and on a busy machine the overlapped query competes with
didkit's threads for the two cores. The two ceiling rows measure this allowance directly.
Meeting 0.8 would mean not waiting for the commit (giving up durability of what was signed),
which we do not do. Every issuance in the
portal itself runs inside the caller's transaction (enrolment, consent grant), whose
commit is shared with the rest of that write.

With every CPU busy (the table by processes), ours issues at about half of bare didkit's
rate: the PostgreSQL work of each INSERT and its commit competes with didkit for the same
two cores, where bare didkit has them to itself.
"""


if __name__ == "__main__":
    if sys.argv[1:2] == ["--saturation-worker"]:
        side, subject_did, sample_id, start_at, end_at, slot = sys.argv[2:8]
        saturation_worker(side, subject_did, sample_id, float(start_at), float(end_at), int(slot))
        # didkit 0.3.3's runtime can crash the interpreter's shutdown (PyGILState_Release):
        # the count is printed, so leave without finalizing.
        sys.stdout.flush()
        os._exit(0)
    else:
        main()
