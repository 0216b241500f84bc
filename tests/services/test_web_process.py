"""The web process as operators run it: gunicorn, over real sockets.

A chunked request body (no Content-Length; gunicorn de-chunks it) is read, not taken as
empty; and with the database unreachable every request answers 503 with Retry-After, in
JSON for the API, instead of a 500 or a hang."""

import http.client
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from consent_portal import services
from tests.services.conftest import ARTIFACTS, ROOT, worker_database_url

pytestmark = pytest.mark.services


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gunicorn(database_url: str, name: str):
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    log = (ARTIFACTS / f"gunicorn-{name}.log").open("w")
    env = {**os.environ, "DATABASE_URL": database_url, "DEBUG": "true"}
    env.pop("REDIS_URL", None)
    env.pop("CELERY_BROKER_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "consent_portal.wsgi", "-b", f"127.0.0.1:{port}", "-w", "1",
         "--timeout", "30"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process, port
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.2)
    process.kill()
    pytest.fail(f"gunicorn did not start; see {log.name}")


@pytest.fixture
def web(real_services):
    process, port = gunicorn(worker_database_url(), "web")
    yield port
    process.terminate()
    process.wait(timeout=20)


def chunked_post(port: int, path: str, body: bytes, token: str) -> tuple[int, dict]:
    """POST `body` in 7-byte chunks over a raw socket; the answer's status and JSON. A
    server may answer (413) before the body is all sent: what it said is still read."""
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7]) for i in range(0, len(body), 7))
    return raw_post(port, path, chunks + b"0\r\n\r\n", token)


def raw_post(port: int, path: str, chunked: bytes, token: str) -> tuple[int, dict]:
    """POST an already chunk-encoded body over a raw socket."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        try:
            sock.sendall(head.encode() + chunked)
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = b""
        while True:
            try:
                part = sock.recv(65536)
            except ConnectionResetError:
                break
            if not part:
                break
            received += part
    response = http.client.HTTPResponse(_Replay(received))
    response.begin()
    return response.status, json.loads(response.read())


class _Replay:
    def __init__(self, data: bytes):
        self.data = data

    def makefile(self, *args, **kwargs):
        import io

        return io.BytesIO(self.data)


def test_a_chunked_body_is_read(web, transactional_db):
    _, token = services.custodian_create(name="Chunked lab")
    question = json.dumps({"sample": "S-404", "study": "no-study", "purpose": "DUO:0000006"}).encode()
    status, body = chunked_post(web, "/api/v1/consent-checks", question, token)
    # Read as sent: the answer is about sample S-404, not "this field is required".
    assert status == 404 and body["error"] == "unknown_sample" and "S-404" in body["detail"]
    big = b'{"samples": ["' + b"x" * (3 * 1024 * 1024) + b'"]}'
    status, body = chunked_post(web, "/api/v1/consent-checks/bulk", big, token)
    assert status == 413 and body["error"] == "body_too_large"
    # A chunk size that is not hexadecimal: gunicorn's reader raises, we answer 400.
    status, body = raw_post(web, "/api/v1/consent-checks", b"zz\r\n{}\r\n0\r\n\r\n", token)
    assert status == 400 and body["error"] == "bad_request"


def test_an_unreachable_database_answers_503_with_retry_after(real_services):
    unreachable = "postgres://postgres:postgres@127.0.0.1:1/test"
    process, port = gunicorn(unreachable, "no-database")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/api/v1/consent-checks", body=b'{"sample": "S-1", "study": "s", "purpose": "DUO:0000006"}',
                     headers={"Authorization": "Bearer some-token", "Content-Type": "application/json"})
        response = conn.getresponse()
        body = json.loads(response.read())
        assert response.status == 503 and response.getheader("Retry-After") == "30"
        assert body["error"] == "unavailable" and "retry" in body["detail"]
        conn.request("GET", "/portal/", headers={"Cookie": "sessionid=" + "a" * 32})
        page = conn.getresponse()
        assert page.status == 503 and b"Briefly unavailable" in page.read()
    finally:
        process.terminate()
        process.wait(timeout=20)
