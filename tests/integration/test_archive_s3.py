"""The archiver against an S3-compatible server: moto's (``moto[server]``, ThreadedMotoServer on loopback), through
s3fs, on PostgreSQL 15 and 18: exports and manifests verify, a crash's pending batch is recovered, restore works."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime

import orjson
import pytest
import s3fs
from moto.server import ThreadedMotoServer

from pgwatch_cpa.cpa.archive import export as ex
from pgwatch_cpa.cpa.archive.archiver import archive
from pgwatch_cpa.cpa.archive.restore import restore
from pgwatch_cpa.cpa.archive.retention import purge_expired
from pgwatch_cpa.sandbox import free_port
from tests.integration.archive_data import PLANTED_DUE, TABLES, conn_utc, due_ids, fresh_database, plant, row_json

pytestmark = pytest.mark.integration

BUCKET = "cpa-archive"


@pytest.fixture
def dsn(pg_server) -> str:
    return fresh_database(pg_server)


@pytest.fixture(scope="module")
def s3():
    """(storage options, s3fs file system) of a moto S3 server with an empty bucket."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "test", "secret": "test",
               "client_kwargs": {"region_name": "eu-west-1"}}  # us-east-1 refuses a LocationConstraint
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir(BUCKET)
    yield options, fs
    server.stop()


async def test_archive_to_s3_then_restore(dsn, s3):
    options, fs = s3
    plant(dsn)
    before = {p: row_json(dsn, TABLES[p], PLANTED_DUE[p]) for p in ("audit_logs", "tasks")}
    prefix = f"{BUCKET}/{dsn.rsplit('/', 1)[1]}"
    report = await archive(dsn, f"s3://{prefix}", policies=["audit_logs", "tasks"], batch_size=4,
                           storage_options=options)
    assert not report.failed and [r.rows for r in report.results] == [2, 10]
    fs.invalidate_cache()
    manifests = sorted(p for p in fs.find(prefix) if p.endswith(ex.MANIFEST_SUFFIX))
    exports = sorted(p for p in fs.find(prefix) if p.endswith(ex.EXPORT_SUFFIX))
    assert len(manifests) == len(exports) == sum(r.batches for r in report.results)
    lines: dict[str, list[str]] = {}
    for path in manifests:
        manifest = ex.parse_manifest(fs.cat_file(path))
        data = fs.cat_file(path.rsplit("/", 1)[0] + "/" + manifest["export"])
        lines.setdefault(manifest["policy"], []).extend(ex.decode(data, manifest).lines)
        assert len(data) == manifest["compressed_bytes"]
    for policy, rows in before.items():
        assert sorted(lines[policy]) == sorted(rows.values())
    assert due_ids(dsn)["audit_logs"] == set()

    restored = 0
    for path in manifests:
        restored += await restore(dsn, f"s3://{path}", storage_options=options)
    assert restored == 12
    for policy, rows in before.items():
        assert row_json(dsn, TABLES[policy], PLANTED_DUE[policy]) == rows

    with conn_utc(dsn) as conn:
        conn.execute("UPDATE archive_batches SET retain_until = now() - interval '1 day'")
    purged = await purge_expired(dsn, storage_options=options)
    assert len(purged) == len(manifests)
    fs.invalidate_cache()
    assert fs.find(prefix) == []


async def test_a_pending_s3_batch_is_completed_by_the_next_run(dsn, s3):
    """The state kill -9 leaves after the manifest's PUT and before the COMMIT, made by hand on S3."""
    options, fs = s3
    plant(dsn)
    prefix = f"{BUCKET}/{dsn.rsplit('/', 1)[1]}"
    ids = sorted(i for i in PLANTED_DUE["audit_logs"] if "_a_" in i)
    before = row_json(dsn, "audit_logs", set(ids))
    export = ex.encode([before[i] for i in ids])
    manifest = ex.build_manifest(batch_id="audit_logs-pending-1", policy="audit_logs", table="audit_logs",
                                 organization_id="org_a", export=export, created_at=datetime.now(UTC))
    fs.pipe_file(f"{prefix}/p/audit_logs-pending-1.jsonl.gz", export.data)
    fs.pipe_file(f"{prefix}/p/audit_logs-pending-1.manifest.json", ex.dump_manifest(manifest))
    with conn_utc(dsn) as conn:
        conn.execute("""INSERT INTO archive_batches (batch_id, policy, organization_id, state, export_url,
                                                     manifest_url)
                        VALUES ('audit_logs-pending-1', 'audit_logs', 'org_a', 'pending', %s, %s)""",
                     [f"s3://{prefix}/p/audit_logs-pending-1.jsonl.gz",
                      f"s3://{prefix}/p/audit_logs-pending-1.manifest.json"])
    report = await archive(dsn, f"s3://{prefix}", policies=["audit_logs"], storage_options=options)
    assert (report.results[0].recovered, report.results[0].rows) == (1, 10)
    fs.invalidate_cache()
    exported = []
    for path in (p for p in fs.find(prefix) if p.endswith(ex.MANIFEST_SUFFIX)):
        m = ex.parse_manifest(fs.cat_file(path))
        raw = gzip.decompress(fs.cat_file(path.rsplit("/", 1)[0] + "/" + m["export"]))
        exported += [orjson.loads(line)["id"] for line in raw.splitlines()]
    assert sorted(exported) == sorted(PLANTED_DUE["audit_logs"])  # the recovered batch's rows once, no re-export
