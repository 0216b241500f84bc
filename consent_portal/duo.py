"""The GA4GH DUO terms shipped in consent_portal/data/duo.csv (CC BY 4.0, see its README)."""

import csv
from pathlib import Path

DUO_CSV = Path(__file__).parent / "data" / "duo.csv"
ROOTS = {"DUO:0000001", "DUO:0000017"}  # "data use permission" and "data use modifier"


def duo_rows() -> list[dict]:
    """Each term with its kind. The CSV has no kind column; DUO's definitions say it
    ("This data use permission ..." / "This data use modifier ..."). The two roots are
    classes, not terms anyone consents to or asks for."""
    rows = []
    with DUO_CSV.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["id"] in ROOTS:
                kind = "root"
            elif "data use permission" in row["description"].lower():
                kind = "permission"
            else:
                kind = "modifier"
            rows.append({**row, "kind": kind})
    return rows


def duo_terms_load(model) -> None:
    """Insert or refresh every term; `model` is DuoTerm (or its migration-time version)."""
    for row in duo_rows():
        model.objects.update_or_create(
            id=row["id"],
            defaults={
                "shorthand": row["shorthand"],
                "label": row["label"],
                "description": row["description"],
                "kind": row["kind"],
            },
        )
