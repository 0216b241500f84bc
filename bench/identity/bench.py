"""Identity benchmarks: one run, prints figures, writes results.json and results.md.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/identitybench .venv/bin/python bench/identity/bench.py

- issue / verify throughput of consent credentials through our services and selectors,
  against bare didkit calls (didkit_backend.issue_credential / verify_credential: json in,
  one didkit coroutine, json out) on the same documents in the same run; target >= 0.8.
- status check of one credential against the cached, verified 131,072-entry lists: p50 < 1 ms.

Writes rows into the identity tables of the database it is given: use a database of its own.
"""

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "consent_portal.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from identity import didkit_backend, selectors, services, statuslist  # noqa: E402
from identity.keys import decrypt_secret  # noqa: E402

N = int(os.getenv("BENCH_N", "300"))
CLAIMS = {"purpose": "DUO:0000042", "purposeLabel": "general research use", "study": "bench"}
OUT = Path(__file__).resolve().parent


def rate(function, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        function()
    return n / (time.perf_counter() - start)


def main() -> None:
    call_command("migrate", verbosity=0)
    subject = services.did_create()
    issuer = services.issuer_get_or_create()
    sample = services.credential_issue(subject_did=subject.did, credential_type="ConsentCredential", claims=CLAIMS)
    unsigned = {k: v for k, v in sample.document.items() if k != "proof"}
    jwk = decrypt_secret(issuer.encrypted_jwk)

    # Warm both paths (contexts, caches, the verified status lists).
    selectors.credential_verify(document=sample.document)
    didkit_backend.verify_credential(sample.document)

    bare_issue = rate(lambda: didkit_backend.issue_credential(
        unsigned, jwk=jwk, verification_method=issuer.verification_method), N)
    ours_issue = rate(lambda: services.credential_issue(
        subject_did=subject.did, credential_type="ConsentCredential", claims=CLAIMS), N)
    bare_verify = rate(lambda: didkit_backend.verify_credential(sample.document), N)
    ours_verify = rate(lambda: selectors.credential_verify(document=sample.document), N)

    trusted = selectors.trusted_issuer_dids()
    timings = []
    for _ in range(2000):
        start = time.perf_counter()
        status, _error = selectors._credential_status(sample.document, trusted)
        timings.append((time.perf_counter() - start) * 1000)
        assert status == "active"
    timings.sort()
    results = {
        "n": N,
        "database": settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1],
        "python": platform.python_version(),
        "list_entries": statuslist.LIST_BITS,
        "issue_per_s": {"services": round(ours_issue, 1), "bare_didkit": round(bare_issue, 1),
                        "ratio": round(ours_issue / bare_issue, 3), "target": 0.8},
        "verify_per_s": {"selectors": round(ours_verify, 1), "bare_didkit": round(bare_verify, 1),
                         "ratio": round(ours_verify / bare_verify, 3), "target": 0.8},
        "status_check_ms": {"p50": round(statistics.median(timings), 4),
                            "p99": round(timings[int(len(timings) * 0.99)], 4), "target_p50": 1.0},
    }
    print(json.dumps(results, indent=2))
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    def met(ok: bool) -> str:
        return "met" if ok else "MISSED"

    issue, verify, status = results["issue_per_s"], results["verify_per_s"], results["status_check_ms"]
    (OUT / "results.md").write_text(
        "# Identity benchmark results\n\n"
        f"One run, N={N}, {results['database']}, Python {results['python']}.\n\n"
        "| figure | ours | bare didkit | ratio | target |\n|---|---|---|---|---|\n"
        f"| issue consent credential /s | {issue['services']} | {issue['bare_didkit']} | {issue['ratio']} | >= 0.8 ({met(issue['ratio'] >= 0.8)}) |\n"
        f"| verify consent credential /s | {verify['selectors']} | {verify['bare_didkit']} | {verify['ratio']} | >= 0.8 ({met(verify['ratio'] >= 0.8)}) |\n\n"
        f"Status check against the cached {statuslist.LIST_BITS}-entry lists: p50 {status['p50']} ms, "
        f"p99 {status['p99']} ms (target p50 < 1 ms: {met(status['p50'] < 1)}).\n\n"
        "Ours issue = pyld strict expansion + random free index + didkit signing + a row; ours\n"
        "verify = pyld strict expansion + didkit + trusted issuer + expiry + both status lists.\n"
    )


if __name__ == "__main__":
    main()
