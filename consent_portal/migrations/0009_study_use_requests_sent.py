from django.db import migrations, models
from django.db.models import F


def sent_when_decided(apps, schema_editor):
    # Uses approved before this field existed had their requests sent at approval (the
    # task ran then); the sweep must not ask everyone again.
    StudyUse = apps.get_model("consent_portal", "StudyUse")
    StudyUse.objects.filter(status="approved").update(requests_sent_at=F("decided_at"))
    StudyUse.objects.filter(status="approved", requests_sent_at__isnull=True).update(
        requests_sent_at=models.functions.Now())


class Migration(migrations.Migration):

    dependencies = [
        ("consent_portal", "0008_enrolment_ledger_entry"),
    ]

    operations = [
        migrations.AddField(
            model_name="studyuse",
            name="requests_sent_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(sent_when_decided, migrations.RunPython.noop),
    ]
