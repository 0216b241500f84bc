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
from django.urls import reverse
from django.utils.dateparse import parse_date
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from consent_portal import plain, selectors, services
from consent_portal.models import Consent, ConsentEvent, ConsentRequest, Participant, Purpose, Withdrawal
from identity import selectors as identity_selectors


def day_from_form(text: str):
    """A YYYY-MM-DD date, or None for anything else (parse_date raises on 2027-02-31)."""
    try:
        return parse_date(text)
    except ValueError:
        return None


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
    # 254: the column's length (RFC 5321's limit on a path); a longer one was a 500.
    email = forms.EmailField(
        required=False, max_length=254, help_text="Optional: to hear when a new study asks for your consent."
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
    return _overview_page(request, participant)


def _overview_page(request, participant, donation_code=None):
    return render(
        request,
        "portal/overview.html",
        {
            "participant": participant,
            "enrolment": identity_selectors.credential_document(credential_id=participant.enrolment_credential_id),
            "custodians": participant.enrolments.select_related("custodian").order_by("created_at"),
            "donation_code": donation_code,
            "donation_code_days": services.DONATION_CODE_DAYS,
        },
    )


@participant_required
@require_POST
def donation_code(request, participant):
    """A new one-time donation code, shown once on this response and never stored in clear."""
    return _overview_page(request, participant, donation_code=services.donation_code_create(participant=participant))


@participant_required
def consents(request, participant):
    rows = selectors.purposes_with_consents(participant=participant)
    return render(
        request, "portal/consents.html",
        {"participant": participant, "rows": rows, "signing_dids": selectors.signing_dids(participant=participant)},
    )


def _confirm(request, participant, context: dict):
    """The page that says what a decision will do and asks to confirm it. Granting and
    taking back take the same steps (GDPR Art. 7(3)): a button, then this page."""
    return render(request, "portal/confirm.html", {
        "participant": participant, "signing_dids": selectors.signing_dids(participant=participant), **context})


def _purpose_words(purpose: Purpose) -> dict:
    return {
        "permission": plain.permission_words(purpose.permission_id),
        "modifiers": [(m.id, m.shorthand, plain.modifier_words(m.id)) for m in purpose.modifiers.all()],
    }


@participant_required
def consent_grant(request, participant, slug):
    purpose = selectors.purpose_for_participant(participant=participant, slug=slug)
    if purpose is None:
        raise Http404("No such purpose.")
    if request.method == "POST":
        try:
            services.consent_grant(
                participant=participant, purpose=purpose, signed_decision=request.POST.get("signed_decision") or None
            )
        except services.ConsentStateError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, _("You granted consent for “%(title)s”.") % {"title": purpose.title})
        return redirect("portal-consents")
    refusal = services.grant_refusal(participant=participant, purpose=purpose)
    if refusal:  # no page confirming what cannot be done
        messages.error(request, refusal)
        return redirect("portal-consents")
    return _confirm(request, participant, {
        "action": "grant", "purpose": purpose, "words": _purpose_words(purpose),
        "form_action": request.path, "cancel_url": reverse("portal-consents"),
    })


@participant_required
def consent_change(request, participant, consent_id, action):
    if action not in ("suspend", "resume", "revoke"):
        raise Http404("No such action.")
    if request.method != "POST":
        consent = get_object_or_404(
            Consent.objects.select_related("purpose__permission", "participant").exclude(state=Consent.REVOKED),
            pk=consent_id, participant=participant,
        )
        refusal = services.consent_change_refusal(consent=consent, action=action)
        if refusal:  # no page confirming what cannot be done
            messages.error(request, refusal)
            return redirect("portal-consents")
        return _confirm(request, participant, {
            "action": action, "purpose": consent.purpose, "consent": consent,
            "words": _purpose_words(consent.purpose), "form_action": request.path,
            "cancel_url": reverse("portal-consents"),
        })
    until = None
    if action == "suspend" and request.POST.get("until"):
        day = day_from_form(request.POST["until"])
        if day is None:
            messages.error(request, _("Give the end of the suspension as a date."))
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
        messages.success(request, _("Consent for “%(title)s” is now %(state)s.")
                         % {"title": consent.purpose.title, "state": consent.state})
    return redirect("portal-consents")


@participant_required
def history(request, participant):
    events = selectors.consent_history(participant=participant)
    return render(request, "portal/history.html", {"participant": participant, "events": events})


@participant_required
def history_receipt(request, participant, event_id):
    """A download that proves an entry of the ledger is this decision of this participant:
    `python -m ledger.verify` checks it offline and names what the entry commits to."""
    receipt = selectors.event_receipt(participant=participant, event_id=event_id)
    if receipt is None:
        raise Http404("No such decision.")
    return _json_download(receipt, filename=f"consent-decision-{event_id}-receipt.json")


@participant_required
def credentials(request, participant):
    ids = selectors.participant_credential_ids(participant=participant)
    if request.GET.get("format") == "json":
        documents = [identity_selectors.credential_document(credential_id=i) for i in ids]
        return _json_download(documents, filename="my-credentials.json")
    cards = selectors.credential_cards(participant=participant, credential_ids=ids)
    return render(request, "portal/credentials.html", {"participant": participant, "cards": cards})


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
        {"participant": participant, "requests": selectors.open_requests(participant=participant)},
    )


@participant_required
def request_answer(request, participant, request_id):
    """GET ?scope=study|standing: the page that confirms a yes. POST answer=grant (with the
    scope) or answer=decline."""
    if request.method != "POST":
        try:
            consent_request, purpose = services.consent_request_purpose(
                participant=participant, request_id=request_id, scope=request.GET.get("scope", ""))
        except ConsentRequest.DoesNotExist:
            raise Http404("No such request.") from None
        except services.ConsentStateError as exc:
            messages.error(request, str(exc))
            return redirect("portal-requests")
        return _confirm(request, participant, {
            "action": "grant", "purpose": purpose, "words": _purpose_words(purpose),
            "consent_request": consent_request, "scope": request.GET["scope"],
            "form_action": request.path, "cancel_url": reverse("portal-requests"),
        })
    answer = request.POST.get("answer")
    if answer not in ("grant", "decline"):
        messages.error(request, _("Answer with grant or decline."))
        return redirect("portal-requests")
    try:
        services.consent_request_answer(
            participant=participant, request_id=request_id, grant=answer == "grant",
            scope=request.POST.get("scope", ""), signed_decision=request.POST.get("signed_decision") or None,
        )
    except ConsentRequest.DoesNotExist:
        raise Http404("No such request.") from None
    except services.ConsentStateError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("Thank you: your answer is recorded.") if answer == "decline"
                         else _("Thank you: your consent is granted and recorded."))
    return redirect("portal-requests")


@participant_required
def withdraw(request, participant):
    if request.method == "POST":
        level = request.POST.get("level")
        if level not in dict(Withdrawal.LEVELS):
            messages.error(request, _("Choose one of the withdrawal levels."))
        elif request.POST.get("confirm") != "yes":
            messages.error(request, _("Confirm that you want to withdraw at this level."))
        else:
            try:
                services.participant_withdraw(
                    participant=participant, level=level, signed_decision=request.POST.get("signed_decision") or None
                )
            except services.ConsentStateError as exc:
                messages.error(request, str(exc))
            else:
                messages.success(request, _("Your withdrawal (%(level)s) is recorded.")
                                 % {"level": dict(Withdrawal.LEVELS)[level]})
        return redirect("portal-withdraw")
    return render(
        request, "portal/withdraw.html",
        {"participant": participant,
         # Only levels the service would accept can be chosen (a withdrawal only goes further).
         "levels": [(value, label, services.withdrawal_refusal(participant=participant, level=value) is not None)
                    for value, label in Withdrawal.LEVELS],
         "meanings": selectors.WITHDRAWAL_MEANING,
         "withdrawals": selectors.withdrawals_of(participant=participant),
         "rejoins": participant.rejoins.select_related("ledger_entry"),
         "signing_dids": selectors.signing_dids(participant=participant),
         # Erasure withdraws at no further use first, unless that is done: then it is signed too.
         "erase_withdraws": not selectors.withdrawn_from_use(participant=participant)},
    )


@participant_required
def withdraw_confirm(request, participant):
    """What a withdrawal at the chosen level will do, and the form that makes it."""
    level = request.GET.get("level", "")
    refusal = services.withdrawal_refusal(participant=participant, level=level)
    if refusal:
        messages.error(request, refusal if level in dict(Withdrawal.LEVELS) else _("Choose one of the withdrawal levels."))
        return redirect("portal-withdraw")
    return _confirm(request, participant, {
        "action": "withdraw", "level": level, "level_label": dict(Withdrawal.LEVELS)[level],
        "meaning": selectors.WITHDRAWAL_MEANING[level],
        "preview": selectors.withdrawal_preview(participant=participant, level=level),
        "form_action": reverse("portal-withdraw"), "cancel_url": reverse("portal-withdraw"),
    })


@participant_required
@require_POST
def withdrawal_challenge(request, participant):
    """The exact withdrawal the browser is to sign, and a one-time nonce (JSON)."""
    try:
        challenge = services.withdrawal_challenge_create(
            participant=participant, level=request.POST.get("level", ""), domain=request.get_host()
        )
    except services.ConsentStateError as exc:  # the service knows the levels and their order
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse(challenge)


@participant_required
def rejoin(request, participant):
    """The page that explains rejoining after a withdrawal, and the signed decision."""
    if request.method == "POST":
        if request.POST.get("confirm") != "yes":
            messages.error(request, _("Confirm that you want to take part again."))
            return redirect("portal-rejoin")
        try:
            services.participant_rejoin(
                participant=participant, signed_decision=request.POST.get("signed_decision") or None)
        except services.ConsentStateError as exc:
            messages.error(request, str(exc))
            return redirect("portal-rejoin")
        messages.success(request, _("Welcome back: you take part again. Choose what you consent to."))
        return redirect("portal-consents")
    return render(request, "portal/rejoin.html", {
        "participant": participant, "signing_dids": selectors.signing_dids(participant=participant),
        "level_label": dict(Withdrawal.LEVELS).get(participant.withdrawal_level, ""),
    })


@participant_required
@require_POST
def rejoin_challenge(request, participant):
    try:
        challenge = services.rejoin_challenge_create(participant=participant, domain=request.get_host())
    except services.ConsentStateError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
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
            purpose = selectors.purpose_for_participant(participant=participant, slug=request.POST.get("purpose", ""))
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
    except services.ConsentStateError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse(challenge)


@participant_required
def did_document(request, participant):
    return _json_download(identity_selectors.did_document(did=participant.did), filename="my-did.json",
                          content_type="application/did+json")
