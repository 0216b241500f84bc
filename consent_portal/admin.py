"""Operator screens for reference data and studies. Consents, events, checks and the
ledger are not editable here: they change only through the services."""

from django import forms
from django.contrib import admin

from consent_portal import decisions
from consent_portal.models import Custodian, Disease, DuoTerm, Purpose, Study, StudyUse


@admin.register(DuoTerm)
class DuoTermAdmin(admin.ModelAdmin):
    list_display = ["id", "shorthand", "label", "kind"]
    list_filter = ["kind"]

    def has_add_permission(self, request):
        return False  # loaded from the shipped DUO release

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Disease)
class DiseaseAdmin(admin.ModelAdmin):
    list_display = ["id", "label", "parent"]
    search_fields = ["id", "label"]


class PurposeForm(forms.ModelForm):
    class Meta:
        model = Purpose
        fields = "__all__"

    def clean(self):
        cleaned = super().clean()
        modifiers = [m.id for m in cleaned.get("modifiers") or []]
        errors = decisions.validate_modifier_params(modifiers, cleaned.get("modifier_params") or {})
        if errors:
            raise forms.ValidationError({"modifier_params": list(errors.values())})
        permission = cleaned.get("permission")
        if permission and (permission.id == decisions.DS) != bool(cleaned.get("disease_id")):
            raise forms.ValidationError({"disease_id": "Disease specific research needs a disease, and only it."})
        return cleaned


@admin.register(Purpose)
class PurposeAdmin(admin.ModelAdmin):
    form = PurposeForm
    list_display = ["slug", "title", "permission", "disease_id", "position"]
    filter_horizontal = ["modifiers"]


class StudyUseInline(admin.TabularInline):
    model = StudyUse
    extra = 0
    readonly_fields = ["status", "expires_on", "decided_by", "decided_at"]


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    list_display = ["identifier", "title", "institution", "commercial", "for_profit"]
    inlines = [StudyUseInline]


@admin.register(Custodian)
class CustodianAdmin(admin.ModelAdmin):
    list_display = ["name", "active", "created_at"]
    fields = ["name", "active"]  # tokens come from create_custodian, shown once

    def has_add_permission(self, request):
        return False
