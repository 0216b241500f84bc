"""Thin Celery tasks around the sequencer; both are safe to run twice or at once."""

import logging

from celery import shared_task

from ledger.services import ledger_seal_pending

logger = logging.getLogger(__name__)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def seal_pending() -> int:
    return ledger_seal_pending()


@shared_task(name="ledger.tasks.sweep", acks_late=True, reject_on_worker_lost=True)
def sweep() -> int:
    sealed = ledger_seal_pending()
    if sealed:
        # Only entries whose enqueue was lost (broker down, worker killed) get here.
        logger.info("ledger sweep sealed %d pending entries", sealed)
    return sealed
