from django.db import migrations, models


class Migration(migrations.Migration):
    """Withdrawals are signed decisions: who signed, and the signed JWT VP. Withdrawals
    recorded before this were taken on the logged-in session alone and say so."""

    dependencies = [
        ('consent_portal', '0004_participant_keys'),
    ]

    operations = [
        migrations.AddField(
            model_name='withdrawal',
            name='signed_by',
            field=models.CharField(default='portal-session', max_length=20),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name='withdrawal',
            name='decision_jwt',
            field=models.TextField(blank=True, default=''),
        ),
    ]
