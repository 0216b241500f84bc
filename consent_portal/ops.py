"""What operators watch: /healthz (the process is alive), /readyz (it can serve: database,
broker, sealing keeping up) and /metrics (Prometheus, through django-prometheus and
prometheus_client).

Request counts, latencies and responses by status (errors included) come from
django-prometheus's middleware; consent checks by decision from a counter here; the
ledger's state (pending entries, sealing lag, tree size, witnesses' lag and refusals) is
read from the database when Prometheus scrapes, so every web process reports the same.
Under gunicorn with several workers set PROMETHEUS_MULTIPROC_DIR (prometheus_client's
multiprocess mode) so the counters of every worker are summed.
"""

import hmac
import logging
import os
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Count, Max, Min
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily

from ledger.models import Entry, Member, TreeState, WitnessRefusal

logger = logging.getLogger(__name__)

CHECKS = Counter("consent_checks", "Custodian consent checks answered, by decision", ["decision", "kind"])


def count_check(decision: str, *, kind: str = "single", n: int = 1) -> None:
    CHECKS.labels(decision=decision, kind=kind).inc(n)


def _ledger_state() -> dict:
    head = TreeState.objects.filter(id=1).values_list("size", flat=True).first() or 0
    pending = Entry.objects.filter(index__isnull=True).aggregate(n=Count("id"), oldest=Min("created_at"))
    witnesses = list(Member.objects.filter(active=True).exclude(verifier_key="").annotate(
        cosigned=Max("cosignatures__checkpoint__size")).values_list("name", "cosigned"))
    return {
        "size": head,
        "pending": pending["n"],
        "lag_seconds": (timezone.now() - pending["oldest"]).total_seconds() if pending["oldest"] else 0.0,
        "witnesses": witnesses,
        "refusals": WitnessRefusal.objects.count(),
    }


class LedgerCollector:
    """The ledger's state as gauges, read at scrape time."""

    def collect(self):
        state = _ledger_state()
        yield GaugeMetricFamily("ledger_tree_size", "Entries sealed into the Merkle tree", value=state["size"])
        yield GaugeMetricFamily("ledger_pending_entries", "Entries recorded and not sealed yet",
                                value=state["pending"])
        yield GaugeMetricFamily("ledger_sealing_lag_seconds", "Age of the oldest entry not sealed yet (0: none)",
                                value=state["lag_seconds"])
        yield GaugeMetricFamily("ledger_witness_refusals", "Checkpoints a witness refused to cosign (ever)",
                                value=state["refusals"])
        behind = GaugeMetricFamily("ledger_witness_behind_entries",
                                   "Entries sealed after the last checkpoint this witness cosigned", labels=["witness"])
        for name, cosigned in state["witnesses"]:
            behind.add_metric([name], state["size"] - (cosigned or 0))
        yield behind


_ledger_registry = CollectorRegistry()  # read only at scrape time, not at import
_ledger_registry.register(LedgerCollector())


def _process_registry():
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def _metrics_allowed(request) -> bool:
    token = settings.METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        return hmac.compare_digest(given.encode(), token.encode())
    # No token: this host only, and not through a proxy on it (which would make every
    # outside request look local): a forwarded request is refused.
    forwarded = any(request.META.get(h) for h in ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP"))
    return request.META.get("REMOTE_ADDR") in ("127.0.0.1", "::1") and not forwarded


@never_cache
@require_GET
def metrics(request):
    if not _metrics_allowed(request):
        return JsonResponse({"error": "permission_denied",
                             "detail": "Metrics need the METRICS_TOKEN as a bearer token (or, with none set, "
                                       "a request from this host)."}, status=403)
    body = generate_latest(_process_registry()) + generate_latest(_ledger_registry)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)


@never_cache
@require_GET
def healthz(request):
    """Alive: the process answers. Touches nothing else, so a restart is never ordered for
    a database that is down."""
    return JsonResponse({"status": "alive"})


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except DatabaseError as exc:
        # The cause goes to the log, not to an unauthenticated caller (host names, users).
        logger.error("readyz: database: %s", exc)
        return "failed: the database does not answer"


def _check_broker() -> str:
    url = settings.CELERY_BROKER_URL
    if not url:
        return "ok (in-process tasks)"
    if not url.startswith(("redis://", "rediss://")):
        return "ok (not checked: not Redis)"
    from ledger.tasks import _redis_client

    try:
        _redis_client(url).ping()
        return "ok"
    except Exception as exc:
        logger.error("readyz: broker: %s", exc)
        return "failed: the broker does not answer (requests still succeed; sealing waits)"


@never_cache
@require_GET
def readyz(request):
    """Ready to serve: the database answers, the broker answers, and sealing keeps up (no
    entry has waited longer than LEDGER_READY_MAX_LAG_SECONDS). 503 with each check's
    result otherwise."""
    checks = {"database": _check_database(), "broker": _check_broker()}
    if checks["database"] == "ok":
        oldest = Entry.objects.filter(index__isnull=True).aggregate(n=Min("created_at"))["n"]
        bound = timedelta(seconds=settings.LEDGER_READY_MAX_LAG_SECONDS)
        lag = timezone.now() - oldest if oldest else timedelta(0)
        checks["sealing"] = ("ok" if lag <= bound else
                             f"failed: an entry has waited {lag.total_seconds():.0f} s to be sealed "
                             f"(bound {bound.total_seconds():.0f} s): is the worker running?")
    else:
        checks["sealing"] = "not checked: no database"
    ready = all(value.startswith("ok") for value in checks.values())
    response = JsonResponse({"status": "ready" if ready else "not ready", "checks": checks},
                            status=200 if ready else 503)
    if not ready:
        response["Retry-After"] = "10"
    return response
