from django.urls import path

from ledger import views

app_name = "ledger"

urlpatterns = [
    path("", views.InfoView.as_view(), name="info"),
    path("checkpoint", views.CheckpointView.as_view(), name="checkpoint"),
    path("checkpoint/cosigned", views.CosignedCheckpointView.as_view(), name="checkpoint-cosigned"),
    path("cosignatures", views.CosignatureView.as_view(), name="cosignatures"),
    path("witnesses", views.WitnessesView.as_view(), name="witnesses"),
    path("entries", views.EntriesView.as_view(), name="entries"),
    path("entries/<int:index>", views.EntryView.as_view(), name="entry"),
    path("proofs/inclusion", views.InclusionProofView.as_view(), name="proof-inclusion"),
    path("proofs/consistency", views.ConsistencyProofView.as_view(), name="proof-consistency"),
]
