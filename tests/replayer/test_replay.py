"""The replayer end to end, in process: real Redis, the Elasticsearch-compatible test server."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY, generate_latest

from streams import Keys
from streams._http import install_prometheus_provider
from tests._support import xrange
from tests.replayer._es_server import FakeElasticsearch
from tests.replayer._files import sample_log, write_capture, write_raw
from tests.replayer.conftest import once_args
from workers.replayer.cli import run_once
from workers.replayer.config import ReplayerConfig
from workers.replayer.ledger import Ledger
from workers.replayer.status import show_status

pytestmark = pytest.mark.anyio


async def _once(
    config: ReplayerConfig, capsys: pytest.CaptureFixture[str], **kwargs: Any
) -> tuple[int, dict[str, Any]]:
    status = await run_once(config, once_args(**kwargs))
    out = capsys.readouterr().out.strip().splitlines()
    return status, json.loads(out[-1])


def _source(es: FakeElasticsearch, index: str, doc_id: str) -> dict[str, Any]:
    """The document the test expects stored."""
    source = es.doc(index, doc_id)
    assert source is not None, (index, doc_id)
    return source


def _ledger_totals(config: ReplayerConfig) -> dict[str, int]:
    ledger = Ledger(config.ledger_path)
    try:
        return ledger.totals()
    finally:
        ledger.close()


def replayed(stream: str, what: str) -> float:
    """streamfill_replay_<what>_total{stream} in this process (0 when not counted yet)."""
    name = f"streamfill_replay_{what}_total"
    for line in generate_latest(REGISTRY).decode().splitlines():
        if line.startswith(name + "{") and f'stream="{stream}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_entries_written_while_es_was_down_are_replayed_once_es_is_back(
    config: ReplayerConfig, es: FakeElasticsearch, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = sample_log(root, captures=40, reflections=15)
    es.down()
    install_prometheus_provider()
    stream = Keys(config.prefix).stream(config.stream)
    status, summary = await _once(config, capsys, timeout=2.0)
    assert status == 1
    assert "elasticsearch unreachable" in summary["reason"] and summary["outstanding"] == 55
    # Every document put on the stream is counted as replayed, with its size.
    assert replayed(stream, "events") == 55 and replayed(stream, "bytes") > 55 * 100
    assert es.count() == 0

    es.up()
    status, summary = await _once(config, capsys, timeout=60.0)
    assert status == 0, summary
    # The first pass enqueued them all: this one re-reads them (pending) instead of enqueuing again.
    assert (summary["enqueued_count"], summary["indexed_count"]) == (0, 55)
    assert summary["awaited_count"] + summary["skipped_count"] == 55
    first = Ledger(config.ledger_path).run(1)
    assert first is not None and (first["status"], first["indexed_count"]) == ("completed", 55)
    assert es.count() == 55
    for index, doc_id in expected:
        source = es.doc(index, doc_id)
        assert source is not None, (index, doc_id)
        assert doc_id in (source.get("trace_id"), source.get("entry_id"))
        assert es.version(index, doc_id) == 1
    assert _source(es, "agent-captains-captures-2026-02-21", "trace-00000")["steps"] == [
        {"tool": "search", "ms": 0}
    ]
    assert _ledger_totals(config)["completed_files"] == 55
    assert _ledger_totals(config)["inflight_files"] == 0


async def test_rerunning_creates_no_duplicates(
    config: ReplayerConfig,
    es: FakeElasticsearch,
    root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    expected = sample_log(root, captures=20, reflections=10)
    status, summary = await _once(config, capsys)
    assert (status, summary["indexed_count"], summary["enqueued_count"]) == (0, 30, 30)

    attempts = sum(es.attempts(i, d) for i, d in expected)
    status, summary = await _once(config, capsys)
    assert (status, summary["skipped_count"], summary["enqueued_count"]) == (0, 30, 0)
    assert sum(es.attempts(i, d) for i, d in expected) == attempts  # the ledger skipped them
    # Each run is audited with its summary.
    async with aioredis.Redis.from_url(config.redis_url or "") as redis:
        rows = await xrange(redis, Keys(config.prefix).audit())
    runs = [json.loads(f[b"args"]) for _, f in rows if f[b"action"] == b"replayer.run_once"]
    assert [(r["ok"], r["indexed_count"], r["skipped_count"]) for r in runs] == [(True, 30, 0), (True, 0, 30)]

    # With the ledger gone, everything is indexed again, by id: versions rise, the count stays.
    fresh = dataclasses.replace(config, state_dir=tmp_path / "other-state")
    status, summary = await _once(fresh, capsys)
    assert (status, summary["indexed_count"]) == (0, 30)
    assert es.count() == 30
    assert {es.version(i, d) for i, d in expected} == {2}


async def test_changed_file_is_indexed_again(
    config: ReplayerConfig, es: FakeElasticsearch, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_capture(root, "t-1", "2026-02-22T10:00:00Z", mtime=1000, outcome="running")
    await _once(config, capsys)
    write_capture(root, "t-1", "2026-02-22T10:00:00Z", mtime=2000, outcome="completed")
    status, summary = await _once(config, capsys)
    assert (status, summary["enqueued_count"], summary["indexed_count"]) == (0, 1, 1)
    assert _source(es, "agent-captains-captures-2026-02-22", "t-1")["outcome"] == "completed"
    assert es.version("agent-captains-captures-2026-02-22", "t-1") == 2


async def test_partial_bulk_failures_retry_only_the_failed_items(
    config: ReplayerConfig, es: FakeElasticsearch, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = sample_log(root, captures=30, reflections=0)
    unlucky = {d for _, d in expected[3:9]}
    es.fail_items(status=429, times=6, match=lambda index, doc_id: doc_id in unlucky)
    status, summary = await _once(config, capsys, timeout=60.0)
    assert (status, summary["indexed_count"], summary["failed_count"]) == (0, 30, 0)
    for index, doc_id in expected:
        assert es.attempts(index, doc_id) == (2 if doc_id in unlucky else 1), doc_id
        assert es.version(index, doc_id) == 1


async def test_server_errors_per_item_are_retried_too(
    config: ReplayerConfig, es: FakeElasticsearch, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = sample_log(root, captures=10, reflections=0)
    es.fail_items(status=503, times=2)
    es.fail_items(status=500, times=1)
    status, summary = await _once(config, capsys, timeout=60.0)
    assert (status, summary["indexed_count"]) == (0, 10)
    assert sum(es.attempts(i, d) for i, d in expected) == 13


async def test_mapping_rejections_and_malformed_files_are_recorded_failed_and_do_not_stop_the_run(
    config: ReplayerConfig,
    es: FakeElasticsearch,
    root: Path,
    capsys: pytest.CaptureFixture[str],
    redis_client: aioredis.Redis,
) -> None:
    sample_log(root, captures=12, reflections=3)
    write_capture(root, "t-bad-mapping", "2026-02-22T10:00:00Z", forbidden={"x": 1})
    write_raw(root / "captures" / "2026-02-22" / "truncated.json", '{"trace_id": "t-trunc", "timest')
    write_raw(root / "CL-no-id.json", '{"timestamp": "2026-02-22T10:00:00Z"}')
    es.reject_mapping("forbidden")
    status, summary = await _once(config, capsys, timeout=60.0)
    assert status == 0
    assert (summary["indexed_count"], summary["failed_count"]) == (15, 3)
    assert es.count() == 15

    ledger = Ledger(config.ledger_path)
    failed = {f["path"]: f for f in ledger.failed_files()}
    ledger.close()
    assert set(failed) == {
        "captures/2026-02-22/t-bad-mapping.json",
        "captures/2026-02-22/truncated.json",
        "CL-no-id.json",
    }
    assert "HTTP 400" in failed["captures/2026-02-22/t-bad-mapping.json"]["error"]
    assert "not valid JSON" in failed["captures/2026-02-22/truncated.json"]["error"]
    assert "entry_id" in failed["CL-no-id.json"]["error"]
    assert {f["retry_count"] for f in failed.values()} == {1}

    dlq = await xrange(redis_client, Keys(config.prefix).stream(config.stream) + ":dlq")
    assert [fields[b"reason"] for _, fields in dlq] == [b"rejected_by_elasticsearch"]

    # Failed files are retried on later passes, up to REPLAYER_MAX_RETRIES (2), then skipped.
    es.clear_faults()
    status, summary = await _once(config, capsys)
    assert (summary["indexed_count"], summary["failed_count"], summary["skipped_count"]) == (1, 2, 15)
    await _once(config, capsys)
    status, summary = await _once(config, capsys)
    assert (summary["enqueued_count"], summary["failed_count"], summary["skipped_count"]) == (0, 0, 18)


async def test_checkpoint_file_has_the_documented_shape(
    config: ReplayerConfig, es: FakeElasticsearch, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sample_log(root, captures=5, reflections=2)
    await _once(config, capsys)
    data = json.loads((root / "es_backfill_checkpoint.json").read_text())
    assert data["version"] == 1
    assert data["last_scan_started_at"].endswith("Z") and data["last_scan_completed_at"].endswith("Z")
    assert data["last_scan_completed_at"] >= data["last_scan_started_at"]
    # The latest file in scan order (mtime, then path) of each kind.
    assert (
        data["captures"]["last_processed_path"] == f"{root.as_posix()}/captures/2026-02-22/trace-00004.json"
    )
    assert data["reflections"]["last_processed_path"] == f"{root.as_posix()}/CL-entry-00001.json"
    assert data["reflections"]["last_processed_mtime"].startswith("2025-10-09T")


async def test_status_shows_runs_and_failed_files_with_errors_and_retry_counts(
    config: ReplayerConfig, es: FakeElasticsearch, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sample_log(root, captures=3, reflections=1)
    write_raw(root / "CL-broken.json", "{")
    await _once(config, capsys)
    await _once(config, capsys)
    assert show_status(config, summary=True, failed=True, run_id=None, as_json=False) == 0
    text = capsys.readouterr().out
    assert "ledger: 4 files indexed, 1 failed, 0 in flight, 2 runs kept" in text
    assert "CL-broken.json\tretries=2\t" in text and "not valid JSON" in text
    assert show_status(config, summary=False, failed=False, run_id=1, as_json=True) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["run"]["status"] == "completed" and report["run"]["indexed_count"] == 4
    # A failed file is listed under the run that last attempted it.
    assert report["failed"] == []
    assert show_status(config, summary=False, failed=False, run_id=2, as_json=True) == 0
    assert [f["path"] for f in json.loads(capsys.readouterr().out)["failed"]] == ["CL-broken.json"]
    assert show_status(config, summary=False, failed=False, run_id=99, as_json=False) == 1
