"""The only module that imports didkit.

didkit's Python binding is frozen at 0.3.3 (VC Data Model 1.1, Ed25519Signature2018, its
own built-in JSON-LD contexts). Most of its functions are coroutines that need a running
event loop; this module exposes small synchronous functions instead and turns every didkit
exception into CredentialError, so swapping the library later touches one file.

Only DID methods that resolve offline (did:key, did:jwk) are accepted: for anything else,
did:web for instance, didkit would make an HTTP request, and the portal runs in a closed
network.
"""

import asyncio
import atexit
import base64
import concurrent.futures
import json
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import didkit

OFFLINE_DID_METHODS = ("did:key:", "did:jwk:")
_PROOF_OPTIONS = json.dumps({"proofPurpose": "assertionMethod"})
_JWT_PROOF_OPTIONS = json.dumps({"proofFormat": "jwt", "proofPurpose": "assertionMethod"})
# didkit raises DIDKitException, and ValueError for input it cannot parse.
_DIDKIT_ERRORS = (didkit.DIDKitException, ValueError)


class CredentialError(ValueError):
    """didkit refused a key, DID, credential or proof; the message says why."""


_loops = threading.local()
# Loops a forked child inherited. Kept referenced and never closed: closing one would remove
# its wake-up pipe from the epoll instance the child shares with its parent, and the
# parent's loop would then never hear that didkit finished.
_inherited_loops: list = []
# didkit futures started and not settled yet (see _settle_at_exit).
_pending: set[asyncio.Future] = set()


def _forget_loops_in_child() -> None:
    global _loops, _pending
    _inherited_loops.append((_loops, _pending))  # the parent's; no thread here settles them
    _loops = threading.local()
    _pending = set()


os.register_at_fork(after_in_child=_forget_loops_in_child)


def _track(future: asyncio.Future) -> asyncio.Future:
    _pending.add(future)
    future.add_done_callback(_pending.discard)
    return future


# How long exit waits at most for didkit's threads to leave Python (normally microseconds).
_EXIT_GRACE_SECONDS = 5.0


def _native_threads_in_python() -> list[int]:
    """Threads Python did not start (didkit's tokio workers) that are running Python code
    right now. Called with the GIL held, so none of them holds it."""
    started = {t.ident for t in threading.enumerate() if not isinstance(t, threading._DummyThread)}
    return [ident for ident in sys._current_frames() if ident not in started]


def _settle_at_exit() -> None:
    """Lets didkit's threads leave Python before the interpreter finalizes (an atexit hook).

    A didkit coroutine ends on one of didkit's tokio threads, which takes the GIL and calls
    the loop's call_soon_threadsafe; that queues the result and then writes to the loop's
    wake-up socket, releasing the GIL. The waiting thread can take the result and the
    program reach its end before the tokio thread gets the GIL back. Once finalization has
    begun, CPython 3.11 ends a thread that asks for the GIL with pthread_exit, which unwinds
    through pyo3's frames: their destructors then touch Python objects without the GIL, or
    release a thread state that is not current, and the process dies with SIGSEGV or SIGABRT
    (PyGILState_Release) instead of its exit status.

    So: first wait for any didkit future still pending (an interrupted call), driving its
    loop when nothing else runs it, then give up the GIL until no thread Python did not
    start is inside Python code. Seen from a thread that holds the GIL, a tokio thread with
    no Python frame has either released its thread state for good or not asked for the GIL
    yet, and once every future is settled there is nothing left for it to ask for. Bounded
    by _EXIT_GRACE_SECONDS, so a stuck thread cannot hang the exit. (os._exit would avoid
    finalization too, but would skip other atexit hooks and the program's exit status.)"""
    deadline = time.monotonic() + _EXIT_GRACE_SECONDS
    for future in list(_pending):
        loop = future.get_loop()
        while not future.done() and not loop.is_closed() and time.monotonic() < deadline:
            if loop.is_running():  # a daemon thread's loop: it settles the future
                time.sleep(0.001)
                continue
            try:
                loop.run_until_complete(asyncio.wait({future}, timeout=deadline - time.monotonic()))
            except BaseException:  # noqa: BLE001 - exiting anyway; a crash is the worse outcome
                break
    while _native_threads_in_python() and time.monotonic() < deadline:
        time.sleep(0.001)  # releases the GIL: the thread finishes and drops its thread state


atexit.register(_settle_at_exit)


def _thread_loop() -> asyncio.AbstractEventLoop:
    """This thread's event loop for didkit calls, made once: asyncio.run would build and
    tear down a loop (and its selector) on every call, which costs a fair part of a
    signature. A forked child (a Celery or gunicorn worker) starts with none."""
    loop = getattr(_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = _loops.loop = asyncio.new_event_loop()
    return loop


def _run(call: Callable[[], Awaitable[str]]) -> str:
    """Runs one didkit coroutine to completion from synchronous code.

    The awaitable must be created inside the loop that awaits it (pyo3-asyncio binds it to
    the running loop), hence a factory. Inside an already running loop (an async view, a
    browser test) the call runs on a worker thread with a loop of its own.
    """

    async def main() -> str:
        return await _track(asyncio.ensure_future(call()))

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        # A short-lived thread: a loop of its own, closed with it.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(_run_in, lambda: asyncio.run(main())).result()
    return _run_in(lambda: _thread_loop().run_until_complete(main()))


def _run_in(run: Callable[[], str]) -> str:
    try:
        return run()
    except _DIDKIT_ERRORS as exc:
        raise CredentialError(str(exc)) from None


def _check_offline_did(did_or_url: Any) -> None:
    if not isinstance(did_or_url, str) or not did_or_url.startswith(OFFLINE_DID_METHODS):
        raise CredentialError(
            f"DID {did_or_url!r} cannot be resolved offline: only did:key and did:jwk are supported"
        )


def generate_ed25519_jwk() -> str:
    """A new Ed25519 private key as a JWK (JSON text, includes "d")."""
    return didkit.generate_ed25519_key()


def did_key_from_jwk(jwk: str) -> str:
    try:
        return didkit.key_to_did("key", jwk)
    except _DIDKIT_ERRORS as exc:
        raise CredentialError(str(exc)) from None


def verification_method(jwk: str) -> str:
    """The did:key verification method URL (did#fragment) for the key."""
    return _run(lambda: didkit.key_to_verification_method("key", jwk))


def _issue_options(verification_method: str) -> str:
    return json.dumps({"proofPurpose": "assertionMethod", "verificationMethod": verification_method})


def _signed_credential(credential: dict, text: str) -> dict:
    signed = json.loads(text)
    # didkit returns the members in hash order; keep the caller's order when nothing else
    # changed, so stored and served documents read the way they were written.
    if {key: value for key, value in signed.items() if key != "proof"} == credential:
        return {**credential, "proof": signed["proof"]}
    return signed


def issue_credential(credential: dict, *, jwk: str, verification_method: str) -> dict:
    """Signs a credential with an Ed25519Signature2018 assertionMethod proof."""
    return issue_credential_begin(credential, jwk=jwk, verification_method=verification_method)()


def _begin(make: Callable[[], Awaitable[str]]) -> Callable[[], str]:
    """Starts a didkit coroutine on this thread's loop and returns a function that waits for
    its result. pyo3-asyncio spawns didkit's work as soon as the future exists, and didkit
    runs it on threads of its own (tokio) without Python's lock, so the caller can wait on
    the database meanwhile. Inside a running event loop the call runs at once."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        result = _run(make)
        return lambda: result
    loop = _thread_loop()

    async def start():
        return _track(asyncio.ensure_future(make()))

    future = _run_in(lambda: loop.run_until_complete(start()))
    return lambda: _run_in(lambda: loop.run_until_complete(future))


def issue_credential_begin(
    credential: dict, *, jwk: str, verification_method: str
) -> Callable[[], dict]:
    """Starts signing as issue_credential does and returns a function that waits for it."""
    text, options = json.dumps(credential), _issue_options(verification_method)
    wait = _begin(lambda: didkit.issue_credential(text, options, jwk))
    return lambda: _signed_credential(credential, wait())


def _check_credential_dids(document: dict) -> None:
    if not isinstance(document, dict):
        raise CredentialError("a credential must be a JSON object")
    issuer = document.get("issuer")
    _check_offline_did(issuer.get("id") if isinstance(issuer, dict) else issuer)
    proofs = document.get("proof")
    for proof in proofs if isinstance(proofs, list) else [proofs]:
        if not isinstance(proof, dict):
            raise CredentialError("the credential has no proof")
        _check_offline_did(proof.get("verificationMethod"))


def verify_credential(document: dict) -> dict:
    """didkit's verification result: {"checks": [...], "warnings": [...], "errors": [...]}.

    Checks the proof only: didkit 0.3.3 neither checks expirationDate nor, unless asked
    (we never ask: it would fetch), the credential status.
    """
    return verify_credential_begin(document)()


def verify_credential_begin(document: dict) -> Callable[[], dict]:
    """Starts verify_credential and returns a function that waits for its result (raising
    CredentialError as verify_credential does, at once or when waited for)."""
    _check_credential_dids(document)
    text = json.dumps(document)
    wait = _begin(lambda: didkit.verify_credential(text, _PROOF_OPTIONS))
    return lambda: json.loads(wait())


def resolve_did(did: str) -> dict:
    """The DID document of a did:key or did:jwk, computed locally."""
    _check_offline_did(did)
    return json.loads(_run(lambda: didkit.resolve_did(did, "{}")))


def _jwt_part(token: str, index: int) -> dict:
    """One decoded (unverified) part of a compact JWS; only to find the DIDs it names."""
    try:
        part = token.split(".")[index]
        value = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError, UnicodeDecodeError) as exc:
        raise CredentialError(f"not a compact JWT: {exc}") from None
    if not isinstance(value, dict):
        raise CredentialError("not a compact JWT: a part is not a JSON object")
    return value


def _check_jwt(token: Any) -> None:
    if not isinstance(token, str) or token.count(".") != 2:
        raise CredentialError("a JWT must be a string of three base64url parts")
    _check_offline_did(_jwt_part(token, 0).get("kid"))
    _check_offline_did(_jwt_part(token, 1).get("iss"))


def verify_credential_jwt(token: str) -> dict:
    """didkit's result for a JWT credential (ES256 / EdDSA): the JWS and the JWT's dates."""
    _check_jwt(token)
    return json.loads(_run(lambda: didkit.verify_credential(token, _JWT_PROOF_OPTIONS)))


def verify_presentation(presentation: dict | str, *, challenge: str, domain: str) -> dict:
    """didkit's result for a presentation, as a JSON object (LD proof) or a JWT.

    didkit checks the signature against the DID named by the proof (JWT: the header's kid),
    and that the proof carries exactly this challenge (JWT: nonce) and domain (JWT: aud); a
    JWT past its exp fails too. It does NOT check that the JWT's iss or the VP's holder is
    the signer: callers do (selectors._presentation_signer).
    """
    options = {"proofPurpose": "authentication", "challenge": challenge, "domain": domain}
    if isinstance(presentation, str):
        _check_jwt(presentation)
        body = presentation
        options["proofFormat"] = "jwt"
    elif isinstance(presentation, dict):
        proofs = presentation.get("proof")
        for proof in proofs if isinstance(proofs, list) else [proofs]:
            if not isinstance(proof, dict):
                raise CredentialError("the presentation has no proof")
            _check_offline_did(proof.get("verificationMethod"))
        body = json.dumps(presentation)
    else:
        raise CredentialError("a presentation is a JSON object or a JWT string")
    return json.loads(_run(lambda: didkit.verify_presentation(body, json.dumps(options))))


def issue_presentation(
    presentation: dict, *, jwk: str, verification_method: str, challenge: str, domain: str
) -> dict:
    """Signs a presentation with an Ed25519Signature2018 authentication proof (DID Auth)."""
    options = json.dumps(
        {
            "proofPurpose": "authentication",
            "verificationMethod": verification_method,
            "challenge": challenge,
            "domain": domain,
        }
    )
    return json.loads(_run(lambda: didkit.issue_presentation(json.dumps(presentation), options, jwk)))
