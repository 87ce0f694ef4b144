"""The settings layer: one declaration per setting, read flag > environment > default (and live
override), bounds and cross-setting rules, rsky names honoured or refused, unknown names warned."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from workers._errors import SettingError
from workers._specs import kinds_reading, known_names, load, specs
from workers.backfiller.config import SPEC as BACKFILLER
from workers.backfiller.config import BackfillerConfig
from workers.cli import build_parser
from workers.indexer.config import SPEC as INDEXER
from workers.ingester.config import SPEC as INGESTER
from workers.replayer.config import SPEC as REPLAYER
from workers.settings import resolve, unknown_names


def args(*argv: str) -> Any:
    return build_parser().parse_args(list(argv))


def test_every_spec_declares_each_config_field_once_with_a_typed_default() -> None:
    for spec in specs():
        defaults = spec.defaults()
        config = spec.config(**defaults)
        assert dataclasses.is_dataclass(config)
        with pytest.raises(dataclasses.FrozenInstanceError):
            config.prefix = "x"  # type: ignore[union-attr]  # writing to a frozen config is the test
        for s in spec.settings:
            assert s.help and s.env.isupper(), s
            value = defaults[s.attr]
            if value is not None:  # the default is a value of the setting's own type, within bounds
                s.check(value, s.env)


def test_flag_beats_environment_beats_default_and_each_value_knows_its_source() -> None:
    environ = {"BACKFILLER_CONCURRENCY": "3", "BACKFILLER_PDS_RPS": "2.5", "BACKFILLER_CONSUMER_GROUP": "g"}
    resolved = resolve(BACKFILLER, flags=args("backfiller", "--concurrency", "5"), environ=environ)
    config = resolved.config
    assert (config.concurrency, config.pds_rps, config.group, config.batch_size) == (5, 2.5, "g", 500)
    sources = {attr: (e.source, e.origin) for attr, e in resolved.values.items()}
    assert sources["concurrency"] == ("flag", "--concurrency")
    assert sources["pds_rps"] == ("env", "BACKFILLER_PDS_RPS")
    assert sources["group"] == ("env", "BACKFILLER_CONSUMER_GROUP")  # rsky's name, honoured
    assert sources["batch_size"] == ("default", "")
    assert resolved.summary()["BACKFILLER_CONCURRENCY"] == "5 (flag)"


def test_configs_are_built_with_only_what_changes() -> None:
    config = BackfillerConfig(plc_url="http://plc.test", concurrency=2)
    assert (config.group, config.backfill_stream, config.max_deliveries) == (
        "repo_backfill_group",
        "repo_backfill",
        5,
    )
    assert config.consumer.startswith("backfiller-")


def test_bool_flags_and_variables() -> None:
    off = resolve(
        INGESTER, flags=args("ingester", "--no-verify-signatures"), environ={"INGESTER_RELAY_HOSTS": "r"}
    )
    assert off.config.verify_signatures is False
    on = resolve(BACKFILLER, flags=None, environ={"BACKFILLER_SKIP_SIGNATURE_VERIFICATION": "yes"})
    assert on.config.skip_signature_verification is True
    with pytest.raises(SettingError, match="BACKFILLER_SKIP_SIGNATURE_VERIFICATION must be true or false"):
        resolve(BACKFILLER, environ={"BACKFILLER_SKIP_SIGNATURE_VERIFICATION": "maybe"})


def test_an_alias_and_its_setting_set_to_different_values_is_refused() -> None:
    same = {"BACKFILLER_INPUT_STREAM": "jobs", "BACKFILLER_BACKFILL_STREAM": "jobs"}
    assert resolve(BACKFILLER, environ=same).config.backfill_stream == "jobs"
    with pytest.raises(SettingError, match="BACKFILLER_BACKFILL_STREAM and BACKFILLER_INPUT_STREAM"):
        resolve(BACKFILLER, environ={**same, "BACKFILLER_INPUT_STREAM": "other"})


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"BACKFILLER_CONCURRENCY": "0"},
            "BACKFILLER_CONCURRENCY must be an integer from 1 to 1024, got '0'",
        ),
        ({"BACKFILLER_PDS_RPS": "fast"}, "BACKFILLER_PDS_RPS must be a number, got 'fast'"),
        ({"BACKFILLER_PDS_RPS": "nan"}, "BACKFILLER_PDS_RPS must be a finite number"),
        (
            {"BACKFILLER_METRICS_PORT": "0"},
            "METRICS_PORT must be .* got '0' \\(from BACKFILLER_METRICS_PORT\\)",
        ),
        ({"REDIS_URL": "http://x"}, "REDIS_URL must be a Redis URL"),
        ({"REDIS_URL": "redis://:hunter2@x:notaport/0"}, "got 'redis://:\\*\\*\\*@x:notaport/0'"),
        (
            {"BACKFILLER_RETRY_INITIAL_BACKOFF_MS": "9", "BACKFILLER_RETRY_MAX_BACKOFF_MS": "8"},
            "must not exceed",
        ),
        (
            {"BACKFILLER_OUTPUT_STREAM": "repo_backfill"},
            "BACKFILLER_FIREHOSE_STREAM=repo_backfill must differ",
        ),
        (
            {"RUST_LOG": "info,rsky_backfiller=debug"},
            "STREAMFILL_LOG_LEVEL must be one of .* \\(from RUST_LOG\\)",
        ),
        ({"STREAMFILL_GRACE_SECS": "1"}, "STREAMFILL_GRACE_SECS must be a number from 5 to 3600"),
    ],
)
def test_bad_values_name_the_setting_the_value_and_what_is_allowed(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingError, match=message):
        resolve(BACKFILLER, environ=environ)


def test_rules_run_on_any_candidate_values_as_a_live_override_would_check_them() -> None:
    values = INGESTER.defaults() | {"relay_hosts": ("r",)}
    INGESTER.check(values)
    with pytest.raises(
        SettingError, match="INGESTER_LOW_WATER_MARK=10 must be below INGESTER_HIGH_WATER_MARK=5"
    ):
        INGESTER.check(values | {"high_water_mark": 5, "low_water_mark": 10})
    with pytest.raises(SettingError, match="INGESTER_MODE=labeler needs INGESTER_LABELER_HOSTS"):
        INGESTER.check(values | {"mode": "labeler"})
    with pytest.raises(SettingError, match="INGESTER_HIGH_WATER_MARK must be"):
        INGESTER.check(values | {"high_water_mark": 0})


def test_live_overrides_win_and_only_live_settings_take_one() -> None:
    environ = {"INGESTER_RELAY_HOSTS": "r", "INGESTER_HIGH_WATER_MARK": "1000"}
    resolved = resolve(INGESTER, environ=environ, overrides={"INGESTER_HIGH_WATER_MARK": "50"})
    assert resolved.config.high_water_mark == 50
    assert resolved.values["high_water_mark"].source == "override"
    with pytest.raises(
        SettingError, match="INGESTER_LOW_WATER_MARK=100 must be below INGESTER_HIGH_WATER_MARK=50"
    ):
        resolve(
            INGESTER,
            environ=environ | {"INGESTER_LOW_WATER_MARK": "100"},
            overrides={"INGESTER_HIGH_WATER_MARK": "50"},
        )
    with pytest.raises(SettingError, match="REDIS_URL cannot be overridden while workers run"):
        resolve(INGESTER, environ=environ, overrides={"REDIS_URL": "redis://elsewhere/0"})


def test_indexer_modes_from_rsky_narrow_the_streams() -> None:
    def streams(**environ: str) -> tuple[str, ...]:
        return resolve(INDEXER, environ=environ).config.consumed_streams

    assert streams() == ("firehose_live", "firehose_backfill", "label_live")
    assert streams(INDEXER_MODE="stream") == ("firehose_live", "firehose_backfill")
    assert streams(INDEXER_MODE="label") == ("label_live",)
    with pytest.raises(
        SettingError, match="INDEXER_MODE=stream leaves nothing of INDEXER_STREAMS=label_live"
    ):
        streams(INDEXER_MODE="stream", INDEXER_STREAMS="label_live")
    config = resolve(INDEXER, environ={"INDEXER_CONCURRENCY": "3", "INDEXER_MODE": "stream"}).config
    assert config.pool_size == 6  # one connection per handler task, unless DB_POOL_MAX_SIZE says otherwise


def test_refused_rsky_names_say_what_to_use_instead(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDGEN_SUBSCRIPTION_PATH", "wss://bsky.network")
    with pytest.raises(
        SettingError, match=r"FEEDGEN_SUBSCRIPTION_PATH is not read by streamfill.*INGESTER_RELAY_HOSTS"
    ):
        load(INGESTER, args("ingester", "--relay-hosts", "r"))
    monkeypatch.delenv("FEEDGEN_SUBSCRIPTION_PATH")
    monkeypatch.setenv("ENABLE_DID_RESOLUTION", "false")  # asks for what streamfill does anyway
    load(INDEXER, args("indexer"))
    monkeypatch.setenv("ENABLE_DID_RESOLUTION", "true")
    with pytest.raises(SettingError, match="ENABLE_DID_RESOLUTION is not read by streamfill"):
        load(INDEXER, args("indexer"))


def test_unknown_names_under_our_prefixes_are_warned_with_the_nearest_known_name() -> None:
    environ = {
        "BACKFILLER_CONCURENCY": "3",
        "INDEXER_BATCHSIZE": "9",
        "REPLAYER_ZZZZZZZZ": "1",
        "STREAMFILL_TEST_REDIS_URL": "redis://x",  # the test suite's own
        "INGESTER_RELAY_HOSTS": "r",
        "HOME": "/root",
    }
    warnings = unknown_names(environ, known_names())
    ignored = "is not a streamfill setting and is ignored"
    assert warnings == [
        f"BACKFILLER_CONCURENCY {ignored} (did you mean BACKFILLER_CONCURRENCY?)",
        f"INDEXER_BATCHSIZE {ignored} (did you mean INDEXER_BATCH_SIZE?)",
        f"REPLAYER_ZZZZZZZZ {ignored}",
    ]


def test_the_replayer_root_must_exist_only_for_the_roles_that_read_files(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    with pytest.raises(SettingError, match=f"REPLAYER_ROOT={missing} does not exist"):
        resolve(REPLAYER, environ={"REPLAYER_ROOT": missing}, role="run-once")
    index = resolve(REPLAYER, environ={"REPLAYER_ROOT": missing}, role="index").config
    assert index.root == Path("telemetry/captains_log")  # not read by the index role
    assert not (tmp_path / "missing").exists()
    config = resolve(REPLAYER, environ={"REPLAYER_ROOT": str(tmp_path)}, role="scan").config
    assert config.state == tmp_path / ".replayer"  # the state directory follows the root
    with pytest.raises(SettingError, match="ES_URL must be an http"):
        resolve(REPLAYER, environ={"ES_URL": "notaurl"}, role="index")
    assert resolve(REPLAYER, environ={"ES_URL": "notaurl", "REPLAYER_ROOT": str(tmp_path)}, role="scan")


def test_each_setting_knows_the_worker_kinds_that_read_it() -> None:
    assert kinds_reading("BACKFILLER_PDS_RPS") == ("backfiller",)
    assert kinds_reading("METRICS_PORT") == ("ingester", "backfiller", "indexer", "replayer")
    assert kinds_reading("RELAY_HOSTS") == ("ingester",)  # an alias
    assert kinds_reading("NOT_A_SETTING") == ()
