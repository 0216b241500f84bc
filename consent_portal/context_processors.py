"""What every participant page shows: the withdrawal in force and the open requests."""

from consent_portal import selectors


def participant_status(request):
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    status = selectors.participant_status(user=user)
    return {"participant_status": status} if status else {}
