"""Worker configuration: environment variables (rsky names), each with a flag that wins over it."""

from __future__ import annotations

import pytest

from workers.backfiller.config import from_env as backfiller_from_env
from workers.cli import build_parser
from workers.ingester.config import from_env as ingester_from_env


def test_ingester_env_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://env:6379/0")
    monkeypatch.setenv("INGESTER_RELAY_HOSTS", "relay1.example,relay2.example")
    monkeypatch.setenv("INGESTER_HIGH_WATER_MARK", "1234")
    monkeypatch.setenv("INGESTER_VERIFY_SIGNATURES", "true")
    args = build_parser().parse_args(
        ["ingester", "--mode", "firehose", "--redis-url", "rediss://:pw@flag:6380/1", "--skip-ahead", "50",
         "--no-verify-signatures"]
    )  # fmt: skip
    config = ingester_from_env(args)
    assert config.redis_url == "rediss://:pw@flag:6380/1"  # the flag wins
    assert config.relay_hosts == ("relay1.example", "relay2.example")
    assert (config.mode, config.high_water_mark, config.skip_ahead) == ("firehose", 1234, 50)
    assert (config.batch_size, config.batch_timeout_ms, config.max_consecutive_errors) == (500, 1000, 5)
    assert config.verify_signatures is False


def test_backfiller_env_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKFILLER_MAX_RETRIES", "9")
    monkeypatch.setenv("BACKFILLER_PDS_RPS", "3.5")
    monkeypatch.setenv("BACKFILLER_SKIP_SIGNATURE_VERIFICATION", "true")
    args = build_parser().parse_args(["backfiller", "--max-retries", "2", "--dlq-stream", "x:dlq"])
    config = backfiller_from_env(args)
    assert (config.max_retries, config.pds_rps, config.dlq_stream) == (2, 3.5, "x:dlq")
    assert config.skip_signature_verification is True
    assert (config.group, config.backfill_stream, config.firehose_stream) == (
        "repo_backfill_group", "repo_backfill", "firehose_backfill",
    )  # fmt: skip
    assert config.consumer.startswith("backfiller-")


def test_bad_mode_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGESTER_MODE", "sideways")
    with pytest.raises(SystemExit, match="INGESTER_MODE must be one of"):
        ingester_from_env(build_parser().parse_args(["ingester"]))


def test_indexer_and_replayer_env_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.indexer.config import from_env as indexer_from_env
    from workers.replayer.config import from_env as replayer_from_env

    monkeypatch.setenv("INDEXER_MIN_IDLE_MS", "1000")
    monkeypatch.setenv("INDEXER_MAX_DELIVERIES", "7")
    config = indexer_from_env(build_parser().parse_args(["indexer", "--max-deliveries", "3"]))
    assert (config.min_idle_ms, config.max_deliveries) == (1000, 3)

    monkeypatch.setenv("REPLAYER_INTERVAL", "60")
    monkeypatch.setenv("ES_URL", "http://es.example:9200/")
    replayer = replayer_from_env(build_parser().parse_args(["replayer", "run-once", "--max-retries", "1"]))
    assert (replayer.interval_s, replayer.es_url, replayer.max_retries) == (60.0, "http://es.example:9200", 1)
    assert (replayer.stream, replayer.group, replayer.bulk_max_docs) == ("captains_log", "es_group", 500)
    monkeypatch.setenv("REPLAYER_BULK_MAX_DOCS", "0")
    with pytest.raises(SystemExit, match="REPLAYER_BULK_MAX_DOCS must be positive"):
        replayer_from_env(build_parser().parse_args(["replayer", "index"]))
