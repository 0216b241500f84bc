"""The participant portal: enrol, see purposes, grant / suspend / resume / revoke, history,
credentials. Every query is scoped to request.user's own participant record."""

from datetime import UTC, datetime, time
from functools import wraps

from django import forms
from django.contrib import messages
from django.contrib.auth import login, logout
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.dateparse import parse_date
from django.views.decorators.http import require_POST

from consent_portal import selectors, services
from consent_portal.models import Consent, ConsentEvent, ConsentRequest, Participant, Purpose, Withdrawal
from identity import selectors as identity_selectors


def _json_download(data, *, filename: str, content_type: str = "application/json") -> JsonResponse:
    response = JsonResponse(data, safe=False, json_dumps_params={"indent": 2}, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def participant_required(view):
    @wraps(view)
    @login_required
    def wrapper(request, *args, **kwargs):
        participant = Participant.objects.filter(user=request.user).first()
        if participant is None:
            messages.error(request, "This account is not a participant account.")
            return redirect("home")
        return view(request, participant, *args, **kwargs)

    return wrapper


def home(request):
    if not request.user.is_authenticated:
        return redirect("login")
    if request.user.groups.filter(name=services.ETHICS_GROUP).exists():
        return redirect("ethics-dashboard")
    if Participant.objects.filter(user=request.user).exists():
        return redirect("portal-overview")
    if request.user.is_staff:
        return redirect("admin:index")
    return render(request, "portal/no_role.html")


class SignUpForm(UserCreationForm):
    email = forms.EmailField(
        required=False, help_text="Optional: to hear when a new study asks for your consent."
    )


def sign_up(request):
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        participant = services.participant_sign_up(
            username=form.cleaned_data["username"], password=form.cleaned_data["password1"],
            email=form.cleaned_data["email"],
        )
        login(request, participant.user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, "Welcome. Your decentralized identifier and enrolment credential are ready.")
        return redirect("portal-overview")
    return render(request, "registration/signup.html", {"form": form})


@participant_required
def overview(request, participant):
    return render(
        request,
        "portal/overview.html",
        {
            "participant": participant,
            "enrolment": identity_selectors.credential_document(credential_id=participant.enrolment_credential_id),
        },
    )


@participant_required
def consents(request, participant):
    rows = selectors.purposes_with_consents(participant=participant)
    return render(
        request, "portal/consents.html",
        {"participant": participant, "rows": rows, "signing_dids": selectors.signing_dids(participant=participant)},
    )


@participant_required
@require_POST
def consent_grant(request, participant, slug):
    purpose = get_object_or_404(Purpose, slug=slug)
    try:
        services.consent_grant(
            participant=participant, purpose=purpose, signed_decision=request.POST.get("signed_decision") or None
        )
        messages.success(request, f"You granted consent for “{purpose.title}”.")
    except services.ConsentStateError as exc:
        messages.error(request, str(exc))
    return redirect("portal-consents")


@participant_required
@require_POST
def consent_change(request, participant, consent_id, action):
    until = None
    if action == "suspend" and request.POST.get("until"):
        day = parse_date(request.POST["until"])
        if day is None:
            messages.error(request, "Give the end of the suspension as a date.")
            return redirect("portal-consents")
        until = datetime.combine(day, time.min, tzinfo=UTC)
    try:
        consent = services.consent_change(
            participant=participant, consent_id=consent_id, action=action, suspend_until=until,
            signed_decision=request.POST.get("signed_decision") or None,
        )
    except Consent.DoesNotExist:
        raise Http404("No such consent.") from None
    except services.ConsentStateError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Consent for “{consent.purpose.title}” is now {consent.state}.")
    return redirect("portal-consents")


@participant_required
def history(request, participant):
    events = selectors.consent_history(participant=participant)
    return render(request, "portal/history.html", {"participant": participant, "events": events})


@participant_required
def credentials(request, participant):
    ids = selectors.participant_credential_ids(participant=participant)
    documents = [identity_selectors.credential_document(credential_id=i) for i in ids]
    if request.GET.get("format") == "json":
        return _json_download(documents, filename="my-credentials.json")
    return render(request, "portal/credentials.html", {"participant": participant, "documents": documents})


@participant_required
def credential_download(request, participant, credential_uuid):
    credential_id = f"urn:uuid:{credential_uuid}"
    if credential_id not in selectors.participant_credential_ids(participant=participant):
        raise Http404("No such credential.")
    document = identity_selectors.credential_document(credential_id=credential_id)
    return _json_download(document, filename=f"credential-{credential_uuid}.json")


# Dynamic consent requests, withdrawal, erasure, FHIR export ------------------------------------


@participant_required
def requests_list(request, participant):
    return render(
        request, "portal/requests.html",
        {"participant": participant, "requests": selectors.open_requests(participant=participant),
         "signing_dids": selectors.signing_dids(participant=participant)},
    )


@participant_required
@require_POST
def request_answer(request, participant, request_id):
    answer = request.POST.get("answer")
    if answer not in ("grant", "decline"):
        messages.error(request, "Answer with grant or decline.")
        return redirect("portal-requests")
    try:
        services.consent_request_answer(
            participant=participant, request_id=request_id, grant=answer == "grant",
            signed_decision=request.POST.get("signed_decision") or None,
        )
    except ConsentRequest.DoesNotExist:
        raise Http404("No such request.") from None
    except services.ConsentStateError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Thank you: your answer is recorded." if answer == "decline"
                         else "Thank you: your consent is granted and recorded.")
    return redirect("portal-requests")


@participant_required
def withdraw(request, participant):
    if request.method == "POST":
        level = request.POST.get("level")
        if level not in dict(Withdrawal.LEVELS):
            messages.error(request, "Choose one of the withdrawal levels.")
        elif request.POST.get("confirm") != "yes":
            messages.error(request, "Tick the box to confirm that you want to withdraw.")
        else:
            try:
                services.participant_withdraw(
                    participant=participant, level=level, signed_decision=request.POST.get("signed_decision") or None
                )
            except services.ConsentStateError as exc:
                messages.error(request, str(exc))
            else:
                messages.success(request, f"Your withdrawal ({dict(Withdrawal.LEVELS)[level]}) is recorded.")
        return redirect("portal-withdraw")
    return render(
        request, "portal/withdraw.html",
        {"participant": participant, "levels": Withdrawal.LEVELS,
         "withdrawals": selectors.withdrawals_of(participant=participant),
         "signing_dids": selectors.signing_dids(participant=participant),
         # Erasure withdraws at no further use first, unless that is done: then it is signed too.
         "erase_withdraws": not selectors.withdrawn_from_use(participant=participant)},
    )


@participant_required
@require_POST
def withdrawal_challenge(request, participant):
    """The exact withdrawal the browser is to sign, and a one-time nonce (JSON)."""
    try:
        challenge = services.withdrawal_challenge_create(
            participant=participant, level=request.POST.get("level", ""), domain=request.get_host()
        )
    except ValueError:  # the service knows the levels
        return JsonResponse({"error": "Choose one of the withdrawal levels."}, status=400)
    return JsonResponse(challenge)


@participant_required
@require_POST
def erase(request, participant):
    if request.POST.get("confirm") != "erase my data":
        messages.error(request, "Type “erase my data” to confirm erasure.")
        return redirect("portal-withdraw")
    try:
        services.participant_erase(participant=participant, signed_decision=request.POST.get("signed_decision") or None)
    except services.ConsentStateError as exc:
        messages.error(request, str(exc))
        return redirect("portal-withdraw")
    logout(request)
    return render(request, "portal/erased.html")


@participant_required
def consent_fhir(request, participant, consent_id):
    consent = get_object_or_404(
        Consent.objects.select_related("purpose__permission", "participant"), pk=consent_id, participant=participant
    )
    document = identity_selectors.credential_document(credential_id=consent.credential_id)
    return _json_download(selectors.consent_fhir(consent=consent, credential=document),
                          filename=f"consent-{consent_id}.fhir.json", content_type="application/fhir+json")


# Keys held by the participant, signed decisions, the wallet ------------------------------------


@participant_required
def keys(request, participant):
    return render(
        request, "portal/keys.html",
        {
            "participant": participant,
            "keys": identity_selectors.holder_keys(holder=str(participant.pseudonym), live_only=False),
            "signing_dids": selectors.signing_dids(participant=participant),
            "did_qr": identity_selectors.did_qr_svg(did=participant.did),
        },
    )


@participant_required
@require_POST
def key_challenge(request, participant):
    nonce = services.participant_key_challenge(participant=participant, domain=request.get_host())
    return JsonResponse({"nonce": nonce, "domain": request.get_host()})


@participant_required
@require_POST
def key_register(request, participant):
    try:
        services.participant_key_register(
            participant=participant, presentation=request.POST.get("presentation", ""),
            password=request.POST.get("password", ""), label=request.POST.get("label", ""),
        )
    except services.KeyChangeError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "This browser now holds a key of yours. Your decisions are signed with it.")
    return redirect("portal-keys")


@participant_required
@require_POST
def key_retire(request, participant):
    try:
        services.participant_key_retire(
            participant=participant, did=request.POST.get("did", ""), password=request.POST.get("password", "")
        )
    except services.KeyChangeError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "The key is retired: it can no longer sign for you.")
    return redirect("portal-keys")


@participant_required
@require_POST
def decision_challenge(request, participant):
    """The exact decision the browser is to sign, and a one-time nonce (JSON)."""
    action = request.POST.get("action", "")
    if action not in dict(ConsentEvent.ACTIONS):
        return JsonResponse({"error": "Unknown action."}, status=400)
    try:
        if action == ConsentEvent.GRANT:
            purpose = Purpose.objects.filter(slug=request.POST.get("purpose", "")).first()
            if purpose is None:
                return JsonResponse({"error": "Unknown purpose."}, status=400)
            challenge = services.decision_challenge_create(
                participant=participant, action=action, purpose=purpose, domain=request.get_host()
            )
        else:
            consent_id = request.POST.get("consent", "")
            if not consent_id.isdigit():
                return JsonResponse({"error": "Name the consent."}, status=400)
            challenge = services.decision_challenge_create(
                participant=participant, action=action, consent_id=int(consent_id), domain=request.get_host()
            )
    except Consent.DoesNotExist:
        return JsonResponse({"error": "No such consent."}, status=404)
    return JsonResponse(challenge)


@participant_required
def did_document(request, participant):
    return _json_download(identity_selectors.did_document(did=participant.did), filename="my-did.json",
                          content_type="application/did+json")
