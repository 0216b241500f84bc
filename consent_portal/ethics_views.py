"""The ethics-committee dashboard: approve study uses, watch consent, audit decisions."""

from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from consent_portal import selectors, services
from consent_portal.portal_views import day_from_form
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
    studies = list(selectors.studies_for_review())
    return render(
        request,
        "ethics/dashboard.html",
        {
            "studies": studies,
            "requests": selectors.request_counts(use_ids=[u.pk for s in studies for u in s.uses.all()]),
            "counts": selectors.consent_counts(),
            "checks": selectors.latest_checks(),
            "ledger": ledger_selectors.ledger_info(),
            "checkpoint": ledger_selectors.checkpoint_latest(),
            "witnessing": ledger_selectors.witness_overview(),
        },
    )


@ethics_required
def entry_receipt(request, index):
    """Any sealed ledger entry's receipt with every opening kept for it: the committee audits
    every decision, and `python -m ledger.verify` names what the entry commits to."""
    receipt = ledger_selectors.entry_receipt_opened(index=index)
    if receipt is None:
        raise Http404(f"No sealed ledger entry #{index}.")
    response = JsonResponse(receipt, json_dumps_params={"indent": 2})
    response["Content-Disposition"] = f'attachment; filename="ledger-entry-{index}-receipt.json"'
    return response


@ethics_required
@require_POST
def use_decide(request, use_id):
    decision = request.POST.get("decision")
    if decision not in ("approve", "reject") or not StudyUse.objects.filter(pk=use_id).exists():
        messages.error(request, "Choose approve or reject for an existing study use.")
        return redirect("ethics-dashboard")
    expires_on = None
    if decision == "approve" and request.POST.get("expires_on"):
        expires_on = day_from_form(request.POST["expires_on"])
        if expires_on is None:
            messages.error(request, "Give the approval's expiry as a date (YYYY-MM-DD).")
            return redirect("ethics-dashboard")
    try:
        use = services.study_use_decide(
            use_id=use_id, approve=decision == "approve", member=request.user, expires_on=expires_on
        )
    except ValueError as exc:
        messages.error(request, str(exc))
        return redirect("ethics-dashboard")
    messages.success(request, f"{use.study.identifier}: {use.permission_id} {use.status}.")
    return redirect("ethics-dashboard")
