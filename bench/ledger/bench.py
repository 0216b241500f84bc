"""Ledger benchmarks on PostgreSQL; prints figures and writes results.json / results.md.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/ledgerbench .venv/bin/python bench/ledger/bench.py

The database is emptied of ledger rows first: never point this at a real log.
Large logs are built by a loader that COPYs sealed entry rows, their bundles and hash tiles
straight into the tables (built with ledger.merkle.CompactRange and ledger.tiles, the
sequencer's own code path); the proofs and verification read them exactly as in production.
"""

import hashlib
import json
import multiprocessing
import os
import platform
import random
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "consent_portal.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, connections, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from ledger import integrity, merkle, note, selectors, services, tiles  # noqa: E402
from ledger.canonical import canonical_json  # noqa: E402
from ledger.keys import ledger_key_get_or_create, log_private_key  # noqa: E402
from ledger.models import Checkpoint, Entry, EntryBundle, TreeState  # noqa: E402

SIZES = [int(s) for s in os.getenv("BENCH_SIZES", "10000,100000,1000000").split(",")]
SEAL_ROWS = int(os.getenv("BENCH_SEAL_ROWS", "20000"))
PROOF_SAMPLES = int(os.getenv("BENCH_PROOF_SAMPLES", "500"))
VERIFY_SIZES = {int(s) for s in os.getenv("BENCH_VERIFY_SIZES", "100000,1000000").split(",")}
VERIFY_ROUNDS = int(os.getenv("BENCH_VERIFY_ROUNDS", "5"))
OUT = Path(__file__).parent


def payload(i: int) -> bytes:
    return canonical_json({"kind": "consent.granted", "participant": f"pid-{i:012d}",
                           "purpose": "DUO:0000042", "action": "grant", "seq": i})


def reset() -> None:
    with connection.cursor() as c:
        c.execute("TRUNCATE ledger_cosignature, ledger_witnessrefusal, ledger_checkpoint, "
                  "ledger_entrybundle, ledger_hashtile, ledger_treestate, ledger_entry "
                  "RESTART IDENTITY CASCADE")


def ms(samples: list[float]) -> dict:
    samples = sorted(samples)
    return {"p50_ms": round(statistics.median(samples) * 1000, 3),
            "p95_ms": round(samples[int(len(samples) * 0.95)] * 1000, 3)}


def _plain_insert(rows: list[bytes], now) -> float:
    """The like-for-like baseline: the same entries (payload, time) as rows of a table
    shaped exactly like ledger_entry (LIKE ... INCLUDING ALL: identity, indexes,
    constraints; logged), one multi-row INSERT per 1,000 rows, one transaction each as
    sealing has, bound server-side in binary (the fastest way found to send a plain
    INSERT: faster than Django's cursor, executemany or a temp table)."""
    import psycopg

    with connection.cursor() as c:
        c.execute("DROP TABLE IF EXISTS bench_plain")
        c.execute("CREATE TABLE bench_plain (LIKE ledger_entry INCLUDING ALL)")
    connection.ensure_connection()
    start = time.perf_counter()
    for b in range(0, len(rows), 1000):
        batch = [(p, now) for p in rows[b:b + 1000]]
        with transaction.atomic(), psycopg.Cursor(connection.connection) as cur:
            cur.execute("INSERT INTO bench_plain (payload, created_at) VALUES "
                        + ", ".join(["(%s, %s)"] * len(batch)),
                        [v for row in batch for v in row], binary=True)
    elapsed = time.perf_counter() - start
    with connection.cursor() as c:
        c.execute("DROP TABLE bench_plain")
    return elapsed


def _previous_baseline(rows: list[bytes], now) -> float:
    """The baseline of earlier runs (executemany into an index-less TEMP table), kept only
    so old and new figures can be compared."""
    with connection.cursor() as c:
        c.execute("CREATE TEMP TABLE bench_plain_old (id bigserial PRIMARY KEY, idx bigint, kind "
                  "varchar(64), payload bytea, leaf bytea, created_at timestamptz, sealed_at timestamptz)")
        start = time.perf_counter()
        for b in range(0, len(rows), 1000):
            c.executemany(
                "INSERT INTO bench_plain_old (idx, kind, payload, leaf, created_at, sealed_at) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                [(b + i, "consent.granted", p, hashlib.sha256(b"\0" + p).digest(), now, now)
                 for i, p in enumerate(rows[b:b + 1000])],
            )
        elapsed = time.perf_counter() - start
        c.execute("DROP TABLE bench_plain_old")
    return elapsed


def bench_sealing() -> dict:
    """Sealing vs a plain bulk INSERT of the same rows, batches of 1,000, same run."""
    reset()
    rows = [payload(i) for i in range(SEAL_ROWS)]
    now = timezone.now()
    plain = _plain_insert(rows, now)
    previous = _previous_baseline(rows, now)
    Entry.objects.bulk_create([Entry(payload=p) for p in rows], batch_size=5000)
    start = time.perf_counter()
    sealed = services.ledger_seal_pending(max_batch=1000)
    seal = time.perf_counter() - start
    assert sealed == SEAL_ROWS
    return {"rows": SEAL_ROWS, "batch": 1000,
            "seal_rows_per_s": round(SEAL_ROWS / seal), "plain_insert_rows_per_s": round(SEAL_ROWS / plain),
            "ratio": round(plain / seal, 3),
            "previous_baseline_rows_per_s": round(SEAL_ROWS / previous),
            "ratio_vs_previous_baseline": round(previous / seal, 3)}


class Loader:
    """Appends sealed entries, their bundles and hash tiles with COPY, continuing one tree."""

    def __init__(self):
        reset()
        self.tree = merkle.CompactRange()
        self.edge: dict = {}  # the partial tiles (and "bundle": the partial bundle) as loaded

    def load(self, to_size: int) -> float:
        start = time.perf_counter()
        now = timezone.now()
        raw = connection.connection  # psycopg 3
        size = self.tree.size
        payloads = [payload(i) for i in range(size, to_size)]
        leaves = [merkle.leaf_hash(p) for p in payloads]
        runs = self.tree.extend(leaves)
        hash_tiles = tiles.extend_tiles(size, runs, self.edge)
        bundles = tiles.extend_bundles(size, payloads, self.edge.get("bundle"))
        del payloads, runs
        # COPY cannot replace rows: the partial tile and bundle extended go first.
        EntryBundle.objects.filter(index__in=list(bundles)).delete()
        with connection.cursor() as c:
            for level, index in tiles.edge(size):
                c.execute("DELETE FROM ledger_hashtile WHERE level = %s AND index = %s", [level, index])
        with raw.cursor() as cur:
            with cur.copy("COPY ledger_entry (id, index, created_at, sealed_at, leaf_hash) FROM STDIN") as entries:
                for i, leaf in enumerate(leaves, start=size):
                    entries.write_row((i + 1, i, now, now, leaf))
            with cur.copy("COPY ledger_entrybundle (index, data) FROM STDIN") as out:
                for row in bundles.items():
                    out.write_row(row)
            with cur.copy("COPY ledger_hashtile (level, index, hashes) FROM STDIN") as out:
                for (level, index), data in hash_tiles.items():
                    out.write_row((level, index, data))
        self.edge = {key: hash_tiles.get(key, self.edge.get(key)) for key in tiles.edge(to_size)}
        last = max(bundles)
        self.edge["bundle"] = bundles[last] if to_size % tiles.WIDTH else None
        root = self.tree.root()
        key = ledger_key_get_or_create()
        body = note.checkpoint_body(settings.LEDGER_ORIGIN, to_size, root)
        Checkpoint.objects.create(size=to_size, root_hash=root,
                                  note=note.sign_note(body, key.name, log_private_key(key)))
        TreeState.objects.update_or_create(id=1, defaults={"size": to_size, "root_hash": root})
        with connection.cursor() as c:
            c.execute("SELECT setval(pg_get_serial_sequence('ledger_entry', 'id'), %s)", [to_size])
            # What autovacuum leaves a long-lived log in (since PostgreSQL 13 it vacuums after
            # inserts too): statistics, and a visibility map for index-only scans.
            c.execute("VACUUM ANALYZE ledger_entry, ledger_entrybundle, ledger_hashtile")
        return time.perf_counter() - start


def bench_proofs(size: int) -> dict:
    """Proof latency at this size, twice: as a serving process sees it (the hash tiles it
    read before remembered: those near the top serve every proof) and cold, every tile
    read from the database and folded again (the per-process tile copies cleared before
    each proof): the cost the stored layout itself sets."""
    rng = random.Random(size)
    root = bytes(TreeState.objects.get().root_hash)
    out = {"size": size}
    for mode in ("warm", "cold"):
        inclusion, consistency = [], []
        # Warm the connection and caches a little, as a serving process would be.
        for _ in range(20):
            selectors.leaf_inclusion(index=rng.randrange(size), tree_size=size)
        for n in range(PROOF_SAMPLES):
            i = rng.randrange(size)
            if mode == "cold":
                selectors._tile_levels.clear()
            t0 = time.perf_counter()
            leaf, proof = selectors.leaf_inclusion(index=i, tree_size=size)
            inclusion.append(time.perf_counter() - t0)
            assert n > 3 or merkle.verify_inclusion(index=i, tree_size=size, leaf_hash=leaf, proof=proof,
                                                    root=root)
            first = rng.randrange(1, size)
            if mode == "cold":
                selectors._tile_levels.clear()
            t0 = time.perf_counter()
            selectors.proof_consistency(first=first, second=size)
            consistency.append(time.perf_counter() - t0)
        key = "" if mode == "warm" else "cold_"
        out[f"{key}inclusion"], out[f"{key}consistency"] = ms(inclusion), ms(consistency)
    return out


def _postgres_cpu_seconds() -> float:
    """CPU (user + system) of every PostgreSQL process so far, with the exited backends the
    postmaster has reaped (its children's times): a verification worker's backend exits
    with it. 0 where there is no /proc."""
    if not os.path.isdir("/proc"):
        return 0.0
    ticks = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"postgres" not in f.read():
                    continue
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    """CPU of this process and of its children that have been waited for."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _floor_worker(work: list, taken, result) -> None:
    """One process of the database floor: takes spans in turn; per page, one read of the
    page's bundles, as verification reads them (binary results, server-side parameters),
    and the hashing of every leaf and interior node; no hash tiles, checkpoints or entry
    rows read, nothing compared."""
    from ledger.db import raw_cursor

    sql = (f"SELECT data FROM {EntryBundle._meta.db_table} WHERE index >= %s AND index < %s "
           "ORDER BY index")
    sha256, hashed = hashlib.sha256, 0
    with raw_cursor() as cursor:
        while True:
            with taken.get_lock():
                number = taken.value
                taken.value += 1
            if number >= len(work):
                break
            start, end = work[number]
            tree = merkle.CompactRange()
            for page in range(start, end, integrity.DEFAULT_CHUNK_SIZE):
                stop = min(page + integrity.DEFAULT_CHUNK_SIZE, end)
                cursor.execute(sql, [page // tiles.WIDTH, -(-stop // tiles.WIDTH)], binary=True)
                blob = b"\n".join(data for (data,) in cursor.fetchall())
                lines = (b"\x00" + blob.replace(b"\n", b"\n\x00")).split(b"\n")[: stop - page]
                tree.extend([sha256(line).digest() for line in lines])
                hashed += len(lines)
    connection.close()
    with result.get_lock():
        result.value += hashed


def _database_floor(size: int, workers: int) -> float:
    """Seconds for `workers` processes to read every payload from PostgreSQL and hash the
    whole tree, in the spans ledger_verify uses: the least any full verification that reads
    the log from its database costs here (it does strictly more: hash tiles, checkpoints,
    entry rows, comparisons)."""
    context = multiprocessing.get_context("fork")
    work = integrity.spans(size, workers)
    taken, result = context.Value("q", 0), context.Value("q", 0)
    connections.close_all()
    start = time.perf_counter()
    processes = [context.Process(target=_floor_worker, args=(work, taken, result)) for _ in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    elapsed = time.perf_counter() - start
    assert all(p.exitcode == 0 for p in processes) and result.value == size, (result.value, size)
    return elapsed


def bench_verify(size: int) -> dict:
    """ledger_verify over the whole log vs a bare hashlib loop over the same bytes.

    ledger_verify runs twice a round: in one process (workers=1) and with its default
    worker count for this log (one per CPU); the bare loop is always one process. Rounds
    interleave the four timings, and each figure is the best of VERIFY_ROUNDS rounds.
    """
    bundles = EntryBundle.objects.order_by("index").values_list("data", flat=True)
    payloads = [p for data in bundles.iterator(chunk_size=256) for p in tiles.split_bundle(bytes(data))]
    assert len(payloads) == size
    workers = integrity.default_workers(size)
    bare, floor, single, parallel, parallel_cpu, db_floor = [], [], [], [], [], []
    for _ in range(VERIFY_ROUNDS):
        start = time.perf_counter()
        for p in payloads:
            hashlib.sha256(b"\x00" + p).digest()
        bare.append(time.perf_counter() - start)
        # The least any full verification must hash: every leaf and every interior node
        # (n - 1 of them), here with no database, no comparisons and no kind check.
        start = time.perf_counter()
        tree = merkle.CompactRange()
        for b in range(0, len(payloads), 10000):
            tree.extend([hashlib.sha256(b"\x00" + p).digest() for p in payloads[b:b + 10000]])
        floor.append(time.perf_counter() - start)
        db_floor.append(_database_floor(size, workers))
        for runs, count in ((single, 1), (parallel, workers)):
            cpu = _own_cpu_seconds(), _postgres_cpu_seconds()
            start = time.perf_counter()
            report = services.ledger_verify(workers=count)
            runs.append(time.perf_counter() - start)
            if count == workers:
                parallel_cpu.append((_own_cpu_seconds() - cpu[0], _postgres_cpu_seconds() - cpu[1]))
            assert report.ok and report.entries == size, report.problems[:3]
            assert report.workers == count, (report.workers, count)
    del payloads
    # The CPU of the round whose parallel run is the one reported (the fastest).
    own_cpu, postgres_cpu = parallel_cpu[parallel.index(min(parallel))]
    bare, floor, single, parallel, db_floor = min(bare), min(floor), min(single), min(parallel), min(db_floor)
    return {"size": size, "rounds": VERIFY_ROUNDS, "cpus": os.cpu_count(), "workers": workers,
            "chunk_size": integrity.DEFAULT_CHUNK_SIZE,
            "verify_leaves_per_s": round(size / parallel),
            "verify_single_process_leaves_per_s": round(size / single),
            "bare_hashlib_leaves_per_s": round(size / bare),
            "ratio": round(bare / parallel, 3), "ratio_single_process": round(bare / single, 3),
            "tree_hashing_floor_leaves_per_s": round(size / floor),
            "floor_ratio": round(bare / floor, 3),
            # Where the CPU of the reported parallel run went, against what the target leaves:
            # at half the bare loop's rate the run may last 2 * bare seconds, on every CPU.
            "parallel_cpu_seconds": {"verification processes": round(own_cpu, 2),
                                     "postgresql": round(postgres_cpu, 2)},
            "hashing_floor_cpu_seconds": round(floor, 2),
            "database_floor_leaves_per_s": round(size / db_floor),
            "database_floor_ratio": round(bare / db_floor, 3),
            "cpu_seconds_at_target": round(2 * bare * os.cpu_count(), 2)}


def in_child(function, *args):
    """function(*args) in a forked process: the verification bench's payload lists and
    worker processes stay out of this process, whose RSS the memory figure measures."""
    connections.close_all()
    context = multiprocessing.get_context("fork")
    reader, writer = context.Pipe(duplex=False)

    def run():
        try:
            writer.send(("ok", function(*args)))
        except BaseException as exc:  # noqa: BLE001 (raised again in the parent)
            writer.send(("error", repr(exc)))
        finally:
            connections.close_all()

    process = context.Process(target=run)
    process.start()
    writer.close()
    status, value = reader.recv()
    process.join()
    connection.ensure_connection()  # the loader uses the raw connection as it is
    if status != "ok":
        raise RuntimeError(f"bench_verify failed: {value}")
    return value


def bench_worker_memory(batches: int = 30) -> dict:
    """RSS of this process while sealing batches of 1,000 on top of the big log."""
    size = TreeState.objects.get().size
    rss = []
    for b in range(batches):
        Entry.objects.bulk_create(
            [Entry(payload=payload(size + b * 1000 + i)) for i in range(1000)]
        )
        services.ledger_seal_pending(max_batch=1000)
        with open("/proc/self/status") as f:
            rss.append(next(int(line.split()[1]) for line in f if line.startswith("VmRSS")))
    return {"log_size_at_start": size, "batches": batches, "rss_kib_first": rss[0],
            "rss_kib_last": rss[-1], "rss_kib_max": max(rss),
            "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def main() -> None:
    if connection.vendor != "postgresql":
        sys.exit("set DATABASE_URL to a PostgreSQL database used only for benchmarks")
    call_command("migrate", verbosity=0)
    started = time.perf_counter()
    results = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                           "postgres": connection.cursor().connection.info.server_version},
               "loader": "COPY of sealed rows, bundles and hash tiles built by ledger.merkle and ledger.tiles"}
    results["sealing"] = seal = bench_sealing()
    print(f"sealing: {seal['seal_rows_per_s']} rows/s vs plain INSERT {seal['plain_insert_rows_per_s']} "
          f"rows/s (ratio {seal['ratio']})", flush=True)
    loader = Loader()
    results["proofs"], results["load_seconds"] = [], {}
    for size in SIZES:
        results["load_seconds"][size] = round(loader.load(size), 1)
        row = bench_proofs(size)
        results["proofs"].append(row)
        print(f"proofs at {size}: inclusion p50 {row['inclusion']['p50_ms']} ms, consistency p50 "
              f"{row['consistency']['p50_ms']} ms; cold {row['cold_inclusion']['p50_ms']} / "
              f"{row['cold_consistency']['p50_ms']} ms", flush=True)
        if size in VERIFY_SIZES:
            results.setdefault("verify", []).append(v := in_child(bench_verify, size))
            print(f"verify at {size}: {v['verify_leaves_per_s']} leaves/s with {v['workers']} "
                  f"workers, {v['verify_single_process_leaves_per_s']} in one process, vs bare "
                  f"hashlib {v['bare_hashlib_leaves_per_s']} (ratio {v['ratio']}, one process "
                  f"{v['ratio_single_process']}); hashing floor "
                  f"{v['tree_hashing_floor_leaves_per_s']} (ratio {v['floor_ratio']})", flush=True)
    results["worker_memory"] = mem = bench_worker_memory()
    print(f"sealing RSS at {mem['log_size_at_start']}: first {mem['rss_kib_first']} KiB, "
          f"last {mem['rss_kib_last']} KiB after {mem['batches']} batches", flush=True)
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    p = results["proofs"]
    lines = ["# Ledger benchmark results", "", f"One run, {results['total_seconds']} s, "
             f"{os.cpu_count()} CPUs, PostgreSQL {results['machine']['postgres']}. "
             "Big logs loaded by COPY (see bench.py).", "",
             f"- sealing (batches of 1,000): {seal['seal_rows_per_s']} rows/s; plain bulk INSERT "
             f"of the same rows {seal['plain_insert_rows_per_s']} rows/s; ratio {seal['ratio']} "
             f"(against the earlier runs' baseline, executemany into an index-less TEMP table: "
             f"{seal['previous_baseline_rows_per_s']} rows/s, ratio {seal['ratio_vs_previous_baseline']})",
             "", "Proofs: p50 / p95 ms, as a serving process sees them (the hash tiles read before "
             "remembered) and cold (every tile read from PostgreSQL and folded for each proof).", "",
             "| entries | inclusion | consistency | inclusion, cold | consistency, cold |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['size']:,} | {r['inclusion']['p50_ms']} / {r['inclusion']['p95_ms']} | "
              f"{r['consistency']['p50_ms']} / {r['consistency']['p95_ms']} | "
              f"{r['cold_inclusion']['p50_ms']} / {r['cold_inclusion']['p95_ms']} | "
              f"{r['cold_consistency']['p50_ms']} / {r['cold_consistency']['p95_ms']} |" for r in p]
    for v in results.get("verify", []):
        lines += ["", f"- full verification at {v['size']:,} (`ledger_verify`, what `verify_ledger` "
                  f"runs; best of {v['rounds']} interleaved rounds): {v['verify_leaves_per_s']} "
                  f"leaves/s with {v['workers']} worker processes on {v['cpus']} CPUs, ratio "
                  f"{v['ratio']}; {v['verify_single_process_leaves_per_s']} leaves/s in one "
                  f"process (`--workers 1`), ratio {v['ratio_single_process']}. The bare hashlib "
                  f"loop over the same bytes is one process: {v['bare_hashlib_leaves_per_s']} "
                  f"leaves/s",
                  f"- the hashing any full verification must do (every leaf and every interior "
                  f"node, no database, no checks), one process: "
                  f"{v['tree_hashing_floor_leaves_per_s']} leaves/s; ratio to the bare loop "
                  f"{v['floor_ratio']}: the ceiling for the one-process ratio above",
                  *([f"- CPU of the reported {v['workers']}-worker run: verification processes "
                     f"{v['parallel_cpu_seconds']['verification processes']} s, PostgreSQL "
                     f"{v['parallel_cpu_seconds']['postgresql']} s. At ratio 0.5 the whole run "
                     f"would have {v['cpu_seconds_at_target']} CPU-seconds ({v['cpus']} CPUs for "
                     f"twice the bare loop's time), of which the hashing floor alone takes "
                     f"{v['hashing_floor_cpu_seconds']} s"] if "parallel_cpu_seconds" in v else []),
                  *([f"- the floor of any verification that reads the log's entry bundles (256 entries a row) from PostgreSQL, "
                     f"with the same {v['workers']} workers and spans: one read of the bundles per page, then "
                     f"every leaf and interior node hashed, nothing compared or checked: "
                     f"{v['database_floor_leaves_per_s']} leaves/s, ratio **{v['database_floor_ratio']}**: "
                     f"the ceiling for the ratio above"] if "database_floor_ratio" in v else []),
                  f"- issue #4's target, at least 0.5 of the bare loop: "
                  f"{'met' if v['ratio'] >= 0.5 else 'not met'} at {v['size']:,}"]
    lines += [f"- sealing worker RSS on a {mem['log_size_at_start']:,}-entry log: "
              f"{mem['rss_kib_first']} KiB after the first batch, {mem['rss_kib_last']} KiB after "
              f"{mem['batches']} (max {mem['rss_kib_max']})", ""]
    (OUT / "results.md").write_text("\n".join(lines))
    print(f"wrote {OUT / 'results.json'} and results.md in {results['total_seconds']} s")


if __name__ == "__main__":
    main()
