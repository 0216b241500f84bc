"""The ethics-committee dashboard: approve study uses, watch consent, audit decisions."""

from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from consent_portal import selectors, services
from consent_portal.models import StudyUse
from ledger import selectors as ledger_selectors


def ethics_required(view):
    @wraps(view)
    @login_required
    def wrapper(request, *args, **kwargs):
        if not request.user.groups.filter(name=services.ETHICS_GROUP).exists():
            raise PermissionDenied("Only ethics-committee members may see this page.")
        return view(request, *args, **kwargs)

    return wrapper


@ethics_required
def dashboard(request):
    return render(
        request,
        "ethics/dashboard.html",
        {
            "studies": selectors.studies_for_review(),
            "counts": selectors.consent_counts(),
            "checks": selectors.latest_checks(),
            "ledger": ledger_selectors.ledger_info(),
            "checkpoint": ledger_selectors.checkpoint_latest(),
        },
    )


@ethics_required
@require_POST
def use_decide(request, use_id):
    decision = request.POST.get("decision")
    if decision not in ("approve", "reject") or not StudyUse.objects.filter(pk=use_id).exists():
        messages.error(request, "Choose approve or reject for an existing study use.")
        return redirect("ethics-dashboard")
    use = services.study_use_decide(use_id=use_id, approve=decision == "approve", member=request.user)
    messages.success(request, f"{use.study.identifier}: {use.permission_id} {use.status}.")
    return redirect("ethics-dashboard")
