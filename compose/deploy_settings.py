"""What a deployment file may set: documented settings that the code reads, accepted by the
worker's own configuration parser. Shared by deploy_k8s.py and deploy_compose.py."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the repository's packages must import
    sys.path.insert(0, str(ROOT))

from workers.cli import build_parser  # noqa: E402

SCHEMAS = ROOT / "compose" / "json-schemas"
IMAGE = "streamfill"
# Keys of the Secret the operator creates (configmap.yaml says how), with values of the right form.
SECRET_KEYS = {"REDIS_URL": "redis://redis:6379/0", "DATABASE_URL": "postgresql://u:p@postgres/streamfill"}
# Variables in a streamfill container that streamfill does not read, and who does.
NOT_READ = {"REDIS_ADDRESS": "the KEDA redis-streams scaler (addressFromEnv)"}


@cache
def documented_settings() -> frozenset[str]:
    """Variable names in the first column of the configuration tables of the docs."""
    names: set[str] = set()
    for doc in ("operations.md", "replayer.md"):
        for line in (ROOT / "docs" / doc).read_text().splitlines():
            first = line.split("|")[1] if line.startswith("|") and line.count("|") > 2 else ""
            names.update(re.findall(r"`([A-Z][A-Z0-9_]{2,})`", first))
    return frozenset(names)


@cache
def settings_in_code() -> frozenset[str]:
    """Every quoted upper-case name in the Python code that could read a setting."""
    names: set[str] = set()
    for package in ("workers", "streams", "devnet"):
        for path in (ROOT / package).rglob("*.py"):
            names.update(re.findall(r"[\"']([A-Z][A-Z0-9_]{2,})[\"']", path.read_text()))
    return frozenset(names)


def check_setting_names(where: str, names: list[str]) -> list[str]:
    problems = []
    for name in names:
        if name in NOT_READ:
            continue
        if name not in documented_settings():
            problems.append(f"{where}: {name} is not a documented setting (docs/operations.md)")
        elif name not in settings_in_code():
            problems.append(f"{where}: {name} is documented but no code reads it")
    return problems


@contextlib.contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def worker_config(where: str, args: list[str], env: Mapping[str, str]) -> tuple[Any, list[str]]:
    """Parse `streamfill <args>` and build its configuration from `env`, as the container would."""
    from workers.backfiller.config import from_env as backfiller
    from workers.indexer.config import from_env as indexer
    from workers.ingester.config import from_env as ingester
    from workers.replayer.config import from_env as replayer

    builders = {"ingester": ingester, "backfiller": backfiller, "indexer": indexer, "replayer": replayer}
    err = io.StringIO()
    try:
        with environment(env), contextlib.redirect_stderr(err):
            parsed = build_parser().parse_args(args)
            build = builders.get(args[0])
            return (build(parsed) if build else None), []
    except (SystemExit, ValueError) as exc:
        why = err.getvalue().strip().splitlines()[-1:] or [str(getattr(exc, "code", exc))]
        return None, [f"{where}: `streamfill {' '.join(args)}` is refused: {why[0]}"]


def groups_read(config: Any) -> dict[str, str]:
    """stream -> consumer group, for the workers that read streams with a group."""
    if hasattr(config, "group_for"):  # indexer
        return {s: config.group_for(s) for s in config.streams}
    if hasattr(config, "backfill_stream"):
        return {config.backfill_stream: config.group}
    return {}


@cache
def load_schema(name: str) -> dict[str, Any]:
    """One of our JSON schemas in compose/json-schemas/, itself checked against its metaschema."""
    schema: dict[str, Any] = json.loads((SCHEMAS / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema
