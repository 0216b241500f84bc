"""Run as a program by test_didkit_exit.py (pytest does not collect it).

Issues a consent credential and verifies it through the portal's own functions, then ends,
as a management command that verifies a credential does. The exit status is the verdict:
didkit's threads used to crash the interpreter as it finalized (status 134, PyGILState_Release,
or 139).

With --check-hook it also starts a verification it never waits for (an interrupted call),
runs didkit_backend's exit hook itself and prints, as JSON, what the hook left behind:
{"pending": didkit futures not settled, "native_threads_in_python": threads Python did not
start that are still running Python code}.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "consent_portal.settings")

import django

django.setup()

from identity import didkit_backend, selectors, services

subject = services.did_create()
credential = services.credential_issue(
    subject_did=subject.did,
    credential_type="ConsentCredential",
    claims={"purpose": "DUO:0000042", "purposeLabel": "general research use", "study": "exit-study"},
)
result = selectors.credential_verify(document=credential.document)
if not result["verified"]:
    sys.exit(f"not verified: {result}")

if "--check-hook" in sys.argv[1:]:
    didkit_backend.verify_credential_begin(credential.document)  # never waited for
    didkit_backend._settle_at_exit()
    print(json.dumps({
        "pending": len(didkit_backend._pending),
        "native_threads_in_python": len(didkit_backend._native_threads_in_python()),
    }))
