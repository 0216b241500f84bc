"""The status-list ETag joins that identity's hot queries share."""


from identity import vocabulary
from identity.models import StatusList


def status_etag_joins() -> tuple[str, list]:
    """LEFT JOINs adding our two signed status lists as `r` (revocation) and `s`
    (suspension), so a query can select r.etag and s.etag, and their parameters. Every
    warm verification and issuance reads those ETags in the same query as the keys."""
    lists = StatusList._meta.db_table
    joins = " ".join(
        f"LEFT JOIN {lists} {alias} ON {alias}.purpose = %s AND {alias}.number = 1 AND {alias}.etag <> ''"
        for alias in ("r", "s")
    )
    return joins, list(vocabulary.STATUS_PURPOSES)


def status_etags(values) -> dict[str, str]:
    """{purpose: ETag} from the r.etag, s.etag columns, leaving out a list not signed yet."""
    return {purpose: etag for purpose, etag in zip(vocabulary.STATUS_PURPOSES, values, strict=True) if etag}
