from django.db import migrations

from consent_portal.duo import duo_terms_load


def load(apps, schema_editor):
    duo_terms_load(apps.get_model("consent_portal", "DuoTerm"))


class Migration(migrations.Migration):
    dependencies = [("consent_portal", "0001_initial")]
    operations = [migrations.RunPython(load, migrations.RunPython.noop)]
