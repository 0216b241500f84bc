"""Thin tasks: load ids, call a service, safe to run twice."""

from celery import shared_task

from consent_portal import services


@shared_task(acks_late=True, reject_on_worker_lost=True)
def consent_requests_send(*, use_id: int) -> int:
    # Creating requests ignores existing ones, so a re-delivered task asks nobody twice.
    return services.consent_requests_create(use_id=use_id)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def consent_requests_sweep() -> int:
    """Asks the participants of approved uses whose request task was lost (the broker was
    down when the committee approved)."""
    return sum(services.consent_requests_create(use_id=use_id) for use_id in services.consent_requests_due())


@shared_task(acks_late=True, reject_on_worker_lost=True)
def consents_resume_due() -> int:
    return services.consents_resume_due()
