"""ledger.tasks.seal_soon's Redis flag and its skip window, against a stand-in store (the
real Redis and worker: tests/services/test_worker_sealing.py)."""

import pytest

from ledger import tasks


class FlagStore:
    """What seal_soon and seal_pending use of a Redis client: SET NX and DELETE."""

    def __init__(self):
        self.flag, self.sets = False, 0

    def set(self, key, value, nx, ex):
        self.sets += 1
        if self.flag:
            return None
        self.flag = True
        return True

    def delete(self, key):
        self.flag = False


@pytest.fixture
def flag(monkeypatch, settings):
    settings.LEDGER_SEAL_LINGER_MS = 200
    store, now, queued = FlagStore(), [100.0], []
    monkeypatch.setattr(tasks, "_flag_store", lambda: store)
    monkeypatch.setattr(tasks, "_clock", lambda: now[0])
    monkeypatch.setattr(tasks, "_flag_set_at", None)
    monkeypatch.setattr(tasks.seal_pending, "delay", lambda **kwargs: queued.append(kwargs))
    return store, now, queued


def test_the_task_is_told_the_linger_and_its_process_skips_redis_for_half_of_it(flag, settings):
    store, now, queued = flag
    tasks.seal_soon()
    assert (store.sets, queued) == (1, [{"linger_ms": 200}])
    settings.LEDGER_SEAL_LINGER_MS = 20  # a change here does not shorten the task's wait
    now[0] += 0.099
    tasks.seal_soon()
    assert (store.sets, len(queued)) == (1, 1)
    now[0] += 0.002  # past half of the linger the task was given: ask Redis again
    tasks.seal_soon()
    assert (store.sets, len(queued)) == (2, 1)
    store.delete("flag")  # the task cleared it
    tasks.seal_soon()
    assert (store.sets, queued[-1]) == (3, {"linger_ms": 20})


def test_a_task_that_could_not_be_queued_opens_no_window(flag, monkeypatch):
    store, now, queued = flag

    def broker_down(linger_ms):
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks, "_queue_seal", broker_down)
    monkeypatch.setattr(tasks, "_broker_down_until", 0.0)
    tasks.seal_soon()
    assert (store.sets, store.flag) == (1, False)  # the flag is taken back
    monkeypatch.setattr(tasks, "_queue_seal", lambda linger_ms: queued.append({"linger_ms": linger_ms}))
    # The broker just failed: for a pause, requests leave it alone (their entries stay
    # pending, the outbox), so a hung broker costs one request, not every request.
    now[0] += tasks.BROKER_PAUSE_SECONDS - 0.01
    tasks.seal_soon()
    assert (store.sets, len(queued)) == (1, 0)
    now[0] += 0.02  # after the pause it asks Redis again, and the seal takes every pending entry
    tasks.seal_soon()
    assert (store.sets, len(queued)) == (2, 1)


def test_a_flag_store_that_does_not_answer_pauses_the_broker_without_queuing(flag, monkeypatch):
    store, now, queued = flag
    monkeypatch.setattr(tasks, "_broker_down_until", 0.0)

    def hung(*args, **kwargs):
        raise TimeoutError("Timeout reading from socket")

    monkeypatch.setattr(store, "set", hung)
    tasks.seal_soon()
    assert queued == [] and tasks._broker_paused()


def test_without_a_linger_every_entry_asks_redis(flag, settings):
    store, now, queued = flag
    settings.LEDGER_SEAL_LINGER_MS = 0
    tasks.seal_soon()
    tasks.seal_soon()
    assert (store.sets, queued) == (2, [{"linger_ms": 0}])


def test_a_flag_set_by_another_process_opens_no_window(flag):
    store, now, queued = flag
    store.flag = True
    tasks.seal_soon()
    tasks.seal_soon()
    assert (store.sets, queued) == (2, [])


def test_the_task_waits_the_linger_it_was_given_whatever_the_worker_setting(monkeypatch, settings):
    slept = []
    monkeypatch.setattr(tasks.time, "sleep", slept.append)
    monkeypatch.setattr(tasks, "_clear_seal_flag", lambda: None)
    monkeypatch.setattr(tasks, "ledger_seal_pending", lambda: 0)
    monkeypatch.setattr(tasks, "_flag_store", lambda: None)  # this worker would not linger
    settings.LEDGER_SEAL_LINGER_MS = 0
    tasks.seal_pending(linger_ms=150)
    assert slept == [0.15]
    monkeypatch.setattr(tasks, "_flag_store", lambda: FlagStore())
    settings.LEDGER_SEAL_LINGER_MS = 30
    tasks.seal_pending()  # queued without one (by an older process): the worker's setting
    tasks.seal_pending(linger_ms=0)
    assert slept == [0.15, 0.03]
