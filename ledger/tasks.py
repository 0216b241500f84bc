"""Thin Celery tasks around the sequencer and the witness push; all safe to run twice.

Every committed entry asks for a seal (services._enqueue_seal calls seal_soon). Sealing
takes whatever is pending, so one queued task serves every entry committed before it
starts: with a Redis broker a flag says "a seal is queued" and later entries do not queue
another until the task has started and cleared it; a process that set the flag itself does
not even ask Redis for the first half of the linger it gave the task, since that task cannot
have read before then. Without the flag (another broker, Redis
unreachable) every entry enqueues, as before. Nothing depends on the flag for safety: an
entry whose task was lost stays pending and the beat sweep seals it.
"""

import logging
import threading
import time
from functools import lru_cache

from celery import shared_task
from django.conf import settings

from ledger.selectors import witnesses_to_push
from ledger.services import ledger_seal_pending, ledger_witness_push

logger = logging.getLogger(__name__)

# Longer than a queued seal normally waits, so a lost task is replaced soon after.
SEAL_FLAG_SECONDS = 5
# No request waits on the broker: every call to it from a request has these timeouts
# (seconds), and after a failure this process leaves the broker alone for a while; its
# entries stay pending (the outbox) and the next seal, or the beat sweep, takes them.
BROKER_TIMEOUT = 0.5
BROKER_PAUSE_SECONDS = 5.0
_broker_down_until = 0.0
_publisher = threading.local()


@lru_cache(maxsize=1)
def _redis_client(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=BROKER_TIMEOUT, socket_connect_timeout=BROKER_TIMEOUT)


def _broker_paused() -> bool:
    return _clock() < _broker_down_until


def _broker_failed(what: str) -> None:
    """Leave the broker alone for BROKER_PAUSE_SECONDS: a hung or stopped Redis costs one
    request at most BROKER_TIMEOUT per pause, not every request two minutes."""
    global _broker_down_until
    _broker_down_until = _clock() + BROKER_PAUSE_SECONDS
    _drop_publisher()
    logger.warning("ledger: the broker did not answer (%s); entries stay pending for %.0f s, "
                   "then the next seal or the sweep takes them", what, BROKER_PAUSE_SECONDS, exc_info=True)


def _publisher_connection():
    """This thread's broker connection for queuing seals, with tight timeouts (the worker's
    own connection keeps Celery's defaults, which its blocking reads need)."""
    conn = getattr(_publisher, "connection", None)
    if conn is None:
        app = seal_pending.app
        options = {**(app.conf.broker_transport_options or {}), "socket_timeout": BROKER_TIMEOUT,
                   "socket_connect_timeout": BROKER_TIMEOUT, "max_retries": 0}
        conn = app.connection_for_write(transport_options=options, connect_timeout=BROKER_TIMEOUT)
        _publisher.connection = conn
    return conn


def _drop_publisher() -> None:
    conn = getattr(_publisher, "connection", None)
    _publisher.connection = None
    if conn is not None:
        try:
            conn.release()
        except Exception:
            pass


def _flag_store():
    """A Redis client on the broker's server, or None when tasks run in-process or the
    broker is not Redis."""
    url = settings.CELERY_BROKER_URL
    if seal_pending.app.conf.task_always_eager or not url.startswith(("redis://", "rediss://")):
        return None
    return _redis_client(url)


def _seal_flag() -> str:
    return f"ledger:seal-queued:{settings.CELERY_TASK_DEFAULT_QUEUE}"


# The task this process queued last after setting the flag itself: when the flag was set
# (_clock(), read before the SET) and the linger, in seconds, the task was told to wait.
_flag_set_at: float | None = None
_flag_linger: float = 0.0
_clock = time.monotonic


def _own_task_will_read() -> bool:
    """True while the task this process queued last cannot yet have read what is pending.

    That task was queued after the flag was set, so it starts later, waits the linger it
    was given (seal_pending(linger_ms=...), whatever the worker's own setting) and only
    then reads: after set_at + linger in real time, on whichever host runs it. Every entry
    committed before then is read by it, so seal_soon needs no Redis round trip for those.
    Only half the linger is used, as a margin for timers that are not exact.
    """
    set_at = _flag_set_at
    return set_at is not None and _clock() - set_at < _flag_linger / 2


def seal_soon() -> None:
    """Queue a seal unless one is already queued and not yet started. Never waits on the
    broker for more than BROKER_TIMEOUT, and not at all while it is known to be down."""
    global _flag_set_at, _flag_linger
    if _broker_paused():
        return  # the entry stays pending; a seal after the pause, or the sweep, takes it
    store = _flag_store()
    set_at = None
    if store is not None:
        if _own_task_will_read():
            return
        try:
            before = _clock()
            if not store.set(_seal_flag(), 1, nx=True, ex=SEAL_FLAG_SECONDS):
                return  # the queued task will take this entry too
            set_at = before
        except Exception:
            _broker_failed("seal flag")
            return
    linger_ms = max(settings.LEDGER_SEAL_LINGER_MS, 0) if store is not None else 0
    try:
        _queue_seal(linger_ms)
    except Exception:
        set_at = None
        # The entry is committed and stays pending; the beat sweep seals it later.
        _broker_failed("enqueue")
        if store is not None:
            try:
                store.delete(_seal_flag())
            except Exception:
                pass
    if set_at is not None:
        _flag_set_at, _flag_linger = set_at, linger_ms / 1000


def enqueue(task, **kwargs) -> bool:
    """Queue `task` from a request without waiting on the broker (the publisher's timeouts
    and pause, as seal_soon has); False when it was not queued, for a sweep to catch up."""
    if task.app.conf.task_always_eager:
        try:
            task.delay(**kwargs)  # in-process (the embedded default): runs now
        except Exception:
            # What it failed at (mail, say) is logged; the request that committed is done.
            logger.exception("task %s failed in-process; its sweep retries it", task.name)
            return False
        return True
    if _broker_paused():
        return False
    try:
        task.apply_async(kwargs=kwargs, connection=_publisher_connection(), retry=False)
    except Exception:
        _broker_failed(f"enqueue {task.name}")
        return False
    return True


def _queue_seal(linger_ms: int) -> None:
    if seal_pending.app.conf.task_always_eager:
        try:
            seal_pending.delay(linger_ms=linger_ms)  # in-process (the embedded default): seals now
        except Exception:
            # No broker to pause for: the entries stay pending and the next write seals them.
            logger.exception("ledger: sealing in-process failed; the next write retries")
        return
    seal_pending.apply_async(kwargs={"linger_ms": linger_ms}, connection=_publisher_connection(), retry=False)


def _clear_seal_flag() -> None:
    # Cleared before reading what is pending: an entry committed after this point queues a
    # task of its own, one committed before it is read by this task.
    store = _flag_store()
    if store is not None:
        try:
            store.delete(_seal_flag())
        except Exception:
            logger.warning("ledger: could not clear the seal flag; it expires by itself", exc_info=True)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def seal_pending(linger_ms: int | None = None) -> int:
    """Seal everything pending. Queued by seal_soon with the linger its process counts on:
    that wait is kept even where this worker's own setting differs. Without it (older
    queued tasks), the worker's setting, with a Redis broker only."""
    if linger_ms is None:
        linger_ms = settings.LEDGER_SEAL_LINGER_MS if _flag_store() is not None else 0
    if linger_ms > 0:
        # Group commit: entries committed in the next moment still find the flag set and
        # ride on this task, so a stream of checks is sealed in batches, not one by one.
        time.sleep(linger_ms / 1000)
    _clear_seal_flag()
    sealed = ledger_seal_pending()
    if sealed and witnesses_to_push():
        # A new checkpoint: ask the witnesses to cosign it, outside the sealing lock. A log
        # without witnesses sends no task for each batch.
        witness_push.delay()
    return sealed


@shared_task(acks_late=True, reject_on_worker_lost=True)
def witness_push() -> dict:
    return ledger_witness_push()


@shared_task(name="ledger.tasks.sweep", acks_late=True, reject_on_worker_lost=True)
def sweep() -> int:
    sealed = ledger_seal_pending()
    if sealed:
        # Only entries whose enqueue was lost (broker down, worker killed) get here.
        logger.info("ledger sweep sealed %d pending entries", sealed)
    # Witnesses that were down at the last push get the latest checkpoint now.
    ledger_witness_push()
    return sealed
