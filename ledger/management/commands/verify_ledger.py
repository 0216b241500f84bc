from django.core.management.base import BaseCommand, CommandError

from ledger.services import RemoteAuditError, ledger_audit_remote, ledger_verify

SHOWN_PROBLEMS = 20


class Command(BaseCommand):
    help = (
        "Recompute every leaf hash, stored subtree, checkpoint root and signature from the "
        "entries' bytes in their bundles, and check that every sealed index has its entry "
        "row, holding that leaf's hash. Exits non-zero naming the first bad entry when "
        "the log or its entry rows were altered. "
        "On PostgreSQL, large logs are verified by one worker process per CPU (--workers). "
        "With --remote URL, audit another node's log over its API instead, checking it "
        "against the checkpoints of that log seen here before."
    )

    def add_arguments(self, parser):
        parser.add_argument("--remote", metavar="URL", help="a ledger API, e.g. https://x/api/v1/ledger")
        parser.add_argument("--token", help="a member or custodian token for that API")
        parser.add_argument(
            "--entry-rows", action="store_true",
            help="accepted for compatibility, does nothing: every sealed index's entry row "
            "(which the portal's records point at) is always checked against its leaf",
        )
        parser.add_argument(
            "--workers", type=int, metavar="N",
            help="processes verifying entries in parallel (default: one per CPU for a large "
            "log on PostgreSQL; 1 verifies in this process)",
        )

    def handle(self, *args, remote=None, token=None, workers=None, **options):
        if remote:
            return self._remote(remote, token)
        if workers is not None and workers < 1:
            raise CommandError("--workers must be at least 1")
        report = ledger_verify(progress=self._progress, workers=workers)
        if report.ok:
            by = f" by {report.workers} worker processes" if report.workers > 1 else ""
            self.stdout.write(
                f"ledger intact: {report.entries} entries, {report.nodes} stored hashes, "
                f"{report.checkpoints} checkpoints verified{by}; {report.pending} pending"
            )
            return
        for problem in report.problems[:SHOWN_PROBLEMS]:
            self.stderr.write(problem)
        if len(report.problems) > SHOWN_PROBLEMS:
            self.stderr.write(f"... and {len(report.problems) - SHOWN_PROBLEMS} more problems")
        raise CommandError(f"ledger is NOT intact: {report.headline}")

    def _remote(self, url: str, token: str | None) -> None:
        try:
            result = ledger_audit_remote(url=url, token=token, progress=self._progress)
        except RemoteAuditError as exc:
            raise CommandError(f"remote ledger is NOT intact: {exc}") from None
        against = ", ".join(map(str, result["checked_against"])) or "none seen before"
        self.stdout.write(
            f"remote ledger intact: {result['origin']} at {result['size']} entries; "
            f"consistent with earlier checkpoints: {against}"
        )

    def _progress(self, done: int, total: int) -> None:
        # A line per chunk of a long log; stderr keeps stdout for the verdict.
        self.stderr.write(f"verified {done}/{total} entries")
        self.stderr.flush()
