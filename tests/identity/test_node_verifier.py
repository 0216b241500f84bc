"""An independent verifier in another language (Node.js, Digital Bazaar's jsonld-signatures
and Ed25519Signature2018 suite) checks the consent credentials we issue, offline.

Needs `npm ci --prefix tests/identity/node`. Skipped locally without node_modules; under
CI=true a missing install fails instead, so CI cannot silently skip it.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from identity import vocabulary
from tests.identity.helpers import deep

NODE_DIR = Path(__file__).resolve().parent / "node"


def _node_verify(document: dict) -> tuple[int, dict]:
    installed = (NODE_DIR / "node_modules" / "jsonld-signatures").is_dir()
    node = shutil.which("node")
    if not installed or node is None:
        message = "the Node verifier is not installed: run npm ci --prefix tests/identity/node"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    completed = subprocess.run(
        [node, str(NODE_DIR / "verify.js"), str(vocabulary.CONTEXTS_DIR)],
        input=json.dumps(document),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return completed.returncode, json.loads(completed.stdout)


def test_node_verifies_a_consent_credential_we_issue(consent_credential):
    code, result = _node_verify(consent_credential.document)
    assert (code, result) == (0, {"verified": True})


def test_node_refuses_a_changed_claim(consent_credential):
    document = deep(consent_credential.document)
    document["credentialSubject"]["purpose"] = "DUO:0000006"
    code, result = _node_verify(document)
    assert code == 1 and result["verified"] is False
    assert "Invalid signature" in result["error"]


def test_node_refuses_a_key_that_is_not_the_issuers(consent_credential, subject):
    # Same signature, but the proof names another did:key: the suite derives that key from
    # the DID and the signature no longer verifies.
    document = deep(consent_credential.document)
    fingerprint = subject.did.removeprefix("did:key:")
    document["proof"]["verificationMethod"] = f"{subject.did}#{fingerprint}"
    code, result = _node_verify(document)
    assert code == 1 and result["verified"] is False
