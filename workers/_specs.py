"""Every worker kind's settings in one registry, and `load()`: what a command calls at start.

`load()` refuses the rsky names the command's kind does not honour, warns about variables under
our prefixes that no setting reads, then reads the settings (flag > environment > default).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any, TypeVar

from streams import configure_logging
from workers.control.live import LiveSettings
from workers.settings import Resolved, Spec, refuse_retired, resolve, unknown_names

C = TypeVar("C")

# Variables read outside the settings layer, so that they are not reported as unknown.
READ_ELSEWHERE = {
    "STREAMFILL_OPERATOR": "the `operator` of audit entries (operator commands); default the login name",
    "STREAMFILL_DEBUG": "1: errors at the edge show their traceback (as `streamfill --debug`)",
    "STREAMFILL_REDIS_CLUSTER": "auto | yes | no: whether REDIS_URL names a Redis Cluster (docs/cluster.md)",
}


# Every environment name in rsky's deployment files for the pipeline streamfill is compatible
# with (blacksky-algorithms/rsky: rsky-ingester, rsky-backfiller, rsky-indexer and rsky-firehose,
# their READMEs and Dockerfiles, and the docker-compose settings in its BACKFILL_PLAN.md). Each is
# read, under the same name or as an alias, or refused with what to use instead: none is ignored.
RSKY_NAMES = (
    *("REDIS_URL", "DATABASE_URL", "METRICS_PORT", "PLC_URL", "RUST_LOG"),
    *("INGESTER_RELAY_HOSTS", "INGESTER_LABELER_HOSTS", "INGESTER_MODE", "INGESTER_HIGH_WATER_MARK"),
    *("INGESTER_BATCH_SIZE", "INGESTER_BATCH_TIMEOUT_MS", "RELAY_HOSTS", "LABELER_HOSTS"),
    *("BACKFILLER_BACKFILL_STREAM", "BACKFILLER_BATCH_SIZE", "BACKFILLER_CONCURRENCY", "BACKFILLER_CONSUMER"),
    *("BACKFILLER_DLQ_STREAM", "BACKFILLER_FIREHOSE_STREAM", "BACKFILLER_FIREHOSE_STREAM_HIGH_WATER_MARK"),
    *("BACKFILLER_GROUP", "BACKFILLER_HTTP_TIMEOUT_SECS", "BACKFILLER_MAX_RETRIES"),
    *("BACKFILLER_METRICS_PORT", "BACKFILLER_RETRY_INITIAL_BACKOFF_MS", "BACKFILLER_RETRY_MAX_BACKOFF_MS"),
    *("BACKFILLER_SKIP_SIGNATURE_VERIFICATION", "BACKFILLER_INPUT_STREAM", "BACKFILLER_OUTPUT_STREAM"),
    *("BACKFILLER_CONSUMER_GROUP", "BACKFILLER_CONSUMER_NAME"),
    *("DB_POOL_MAX_SIZE", "DB_POOL_MIN_IDLE", "ENABLE_DID_RESOLUTION", "INDEXER_BATCH_SIZE"),
    *("INDEXER_CONCURRENCY", "INDEXER_CONSUMER", "INDEXER_GROUP", "INDEXER_MODE", "INDEXER_STREAMS"),
    *("FEEDGEN_QUEUE_ENDPOINT", "FEEDGEN_SUBSCRIPTION_CURSOR", "FEEDGEN_SUBSCRIPTION_ENDPOINT"),
    *("FEEDGEN_SUBSCRIPTION_PATH", "RSKY_API_KEY"),
)


def specs() -> tuple[Spec[Any], ...]:
    """Every spec, in the order the reference documents them."""
    from workers.admin import SPEC as admin
    from workers.backfiller.config import SPEC as backfiller
    from workers.campaign.config import SPEC as campaign
    from workers.control.recovery import SPEC as recovery
    from workers.demo.cli import SPEC as demo
    from workers.indexer.config import SPEC as indexer
    from workers.ingester.config import SPEC as ingester
    from workers.replayer.config import SPEC as replayer

    return (admin, ingester, backfiller, indexer, replayer, recovery, campaign, demo)


def known_names() -> frozenset[str]:
    """Every environment name some setting reads (aliases and refused names included)."""
    names = set(READ_ELSEWHERE)
    for spec in specs():
        names.update(n for s in spec.settings for n in s.names)
        names.update(r.env for r in spec.retired)
    return frozenset(names)


def kinds_reading(name: str) -> tuple[str, ...]:
    """The worker kinds whose settings include `name` (an environment name or alias): where a
    live override of it applies."""
    return tuple(spec.kind for spec in specs() if any(name in s.names for s in spec.settings))


def load(
    spec: Spec[C],
    args: object = None,
    *,
    role: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Resolved[C]:
    """The effective settings of `spec` for this command; SettingError for anything not allowed."""
    env = os.environ if environ is None else environ
    refuse_retired(spec.retired, env)
    for warning in unknown_names(env, known_names()):
        print(f"streamfill: warning: {warning}", file=sys.stderr, flush=True)
    flags = args if args is None or isinstance(args, Mapping) else vars(args)
    return resolve(spec, flags=flags, environ=env, role=role)


def start_worker(spec: Spec[C], args: object, *, name: str, role: str | None = None) -> C:
    """Load a worker's settings, set up its logs at the configured level, and log the effective
    settings with their sources (passwords masked)."""
    return start_live(spec, args, name=name, role=role).config


def start_live(spec: Spec[C], args: object, *, name: str, role: str | None = None) -> LiveSettings[C]:
    """`start_worker`, keeping what live overrides are applied over (workers/control/live.py)."""
    settings = load(spec, args, role=role)
    configure_logging(name, str(getattr(settings.config, "log_level", "info")))
    logging.getLogger("streamfill").info("settings", extra={"settings": settings.summary()})
    flags = args if args is None or isinstance(args, Mapping) else vars(args)
    return LiveSettings(spec, flags=flags, environ=os.environ, role=role)
