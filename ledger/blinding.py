"""Blinded ledger entries: salted commitments to the values that say who.

A consortium ledger is read by every member, and a pseudonym is still personal data, so
an entry never carries in the clear a value that links it to one person or one custodian
(a participant code, a DID, a credential, sample, check or custodian id...). It carries a
commitment to each such value instead:

    commitment = SHA-256( canonical JSON {"field": F, "salt": S, "value": V} )  (hex)

with S 16 random bytes (base64url, no padding) drawn for this field of this entry alone.
The entry's leaf holds {"commit": {F: commitment, ...}} beside its clear fields; the
opening {"value": V, "salt": S} stays off the ledger, in the portal's database, and is
handed only to whoever is entitled to it (the participant the entry is about, the
custodian whose check it records, the ethics committee). With the opening anyone can check
the entry commits to V; without it the commitment hides V (the salt is 128 random bits, so
even a value from a small set, such as a custodian number, cannot be guessed), and since
every entry draws fresh salts, two entries about one participant share nothing a reader
could link. Erasure deletes the openings: the log stays verifiable, and no one, the
portal included, can show any more which entries were whose.

Written by hand: this is a few lines over hashlib and secrets, and no maintained library
offers a salted-hash commitment with this exact, documented, offline-checkable encoding
(the verifier, ledger.verify, uses this module without Django).

No Django here: ledger.verify imports it to check openings offline.
"""

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets

SCHEME = "salted-sha256/v1"
SALT_BYTES = 16

# Clear fields that name who, refused outright (compared after folding camelCase, '-',
# ' ' and '.' to '_'): commit them instead.
IDENTIFIER_FIELDS = frozenset([
    "participant", "participant_id", "pseudonym", "did", "holder", "subject", "credential",
    "credential_id", "sample", "sample_id", "custodian", "custodian_id", "check", "check_id",
    "withdrawal", "rejoin", "instruction", "enrolment", "enrollment", "reference", "study",
    "member", "investigator", "researcher", "device", "recipient", "user", "account",
])
# Clear string values shaped like an identifier, whatever their field is called.
_IDENTIFIER_VALUE = re.compile(
    r"(?i)(?:^|[^0-9a-f])[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"|\bdid:[a-z0-9]+:|\burn:uuid:"
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[-\s.]+")
_SALT = re.compile(r"[A-Za-z0-9_-]{22}")
_HEX = re.compile(r"[0-9a-f]{64}")


class OpeningError(ValueError):
    """An opening does not open the commitment it claims to; the message says why."""


def _canonical(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def commitment(field: str, value, salt: str) -> str:
    """The hex commitment to `value` under `field` and `salt`."""
    return hashlib.sha256(_canonical({"field": field, "salt": salt, "value": value})).hexdigest()


def blind(values: dict) -> tuple[dict, dict]:
    """({field: commitment}, {field: {"value", "salt"}}) with a fresh salt per field."""
    commitments, openings = {}, {}
    for field, value in values.items():
        salt = base64.urlsafe_b64encode(secrets.token_bytes(SALT_BYTES)).rstrip(b"=").decode()
        commitments[field] = commitment(field, value, salt)
        openings[field] = {"value": value, "salt": salt}
    return commitments, openings


def opening_check(leaf: dict, field: str, opening) -> object:
    """The value the leaf commits to under `field`, proved by `opening`; raises
    OpeningError if the leaf has no such commitment or the opening does not open it."""
    commitments = leaf.get("commit") if isinstance(leaf, dict) else None
    committed = commitments.get(field) if isinstance(commitments, dict) else None
    if not isinstance(committed, str) or not _HEX.fullmatch(committed):
        raise OpeningError(f"the entry commits to no {field}")
    if not (isinstance(opening, dict) and set(opening) == {"value", "salt"}
            and isinstance(opening["salt"], str) and _SALT.fullmatch(opening["salt"])):
        raise OpeningError(f"the opening of {field} is not {{\"value\", \"salt\"}} with a 16-byte "
                           "base64url salt")
    try:
        base64.urlsafe_b64decode(opening["salt"] + "==")
    except (binascii.Error, ValueError):
        raise OpeningError(f"the opening of {field} has a salt that is not base64url") from None
    if not hmac.compare_digest(commitment(field, opening["value"], opening["salt"]), committed):
        raise OpeningError(f"the opening of {field} does not open the entry's commitment")
    return opening["value"]


def first_match(value, path: str, *, key, text) -> str | None:
    """The path of the first key whose folded name (camelCase, '-', ' ' and '.' to '_',
    lower case) satisfies `key`, or string value satisfying `text`, in a JSON value."""
    if isinstance(value, dict):
        for name, item in value.items():
            if key(_SEPARATORS.sub("_", _CAMEL.sub("_", str(name))).lower().strip("_")):
                return f"{path}.{name}"
            found = first_match(item, f"{path}.{name}", key=key, text=text)
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = first_match(item, f"{path}[{i}]", key=key, text=text)
            if found:
                return found
    elif isinstance(value, str) and text(value):
        return path
    return None


def clear_identifier(value, path: str = "payload") -> str | None:
    """The path of the first clear field or value of a payload that names who, or None."""
    return first_match(value, path, key=IDENTIFIER_FIELDS.__contains__,
                       text=lambda s: bool(_IDENTIFIER_VALUE.search(s)))
