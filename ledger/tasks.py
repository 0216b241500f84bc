"""Thin Celery tasks around the sequencer and the witness push; all safe to run twice."""

import logging

from celery import shared_task

from ledger.selectors import witnesses_to_push
from ledger.services import ledger_seal_pending, ledger_witness_push

logger = logging.getLogger(__name__)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def seal_pending() -> int:
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
