from django.urls import path, re_path

from ledger import converters, views  # noqa: F401 (registers <id:...>)

app_name = "ledger"

urlpatterns = [
    path("", views.InfoView.as_view(), name="info"),
    path("checkpoint", views.CheckpointView.as_view(), name="checkpoint"),
    path("checkpoint/cosigned", views.CosignedCheckpointView.as_view(), name="checkpoint-cosigned"),
    path("cosignatures", views.CosignatureView.as_view(), name="cosignatures"),
    path("witnesses", views.WitnessesView.as_view(), name="witnesses"),
    path("entries", views.EntriesView.as_view(), name="entries"),
    path("entries/<id:index>", views.EntryView.as_view(), name="entry"),
    path("proofs/inclusion", views.InclusionProofView.as_view(), name="proof-inclusion"),
    path("proofs/consistency", views.ConsistencyProofView.as_view(), name="proof-consistency"),
    # C2SP tlog-tiles: tile/entries/<N>[.p/<W>] and tile/<L>/<N>[.p/<W>], N as x001/x234/067.
    re_path(r"^tile/entries/(?P<path>(?:x\d{3}/){0,5}\d{3})(?:\.p/(?P<width>\d+))?$",
            views.EntryBundleView.as_view(), name="entry-bundle"),
    re_path(r"^tile/(?P<level>\d{1,2})/(?P<path>(?:x\d{3}/){0,5}\d{3})(?:\.p/(?P<width>\d+))?$",
            views.HashTileView.as_view(), name="tile"),
]
