"""What a deployment file may set: settings that streamfill reads, with values the worker's own
settings layer accepts. Shared by deploy_k8s.py and deploy_compose.py."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from workers._errors import EdgeError
from workers._partitions import partitioning
from workers._specs import known_names, load, specs
from workers.cli import build_parser
from workers.settings import DIRECTORY, Spec

# The repository (the project is installed editable, so its packages import from anywhere).
ROOT = Path(__file__).resolve().parents[1]

SCHEMAS = ROOT / "compose" / "json-schemas"
IMAGE = "streamfill"
# Keys of the Secret the operator creates (configmap.yaml says how), with values of the right form.
SECRET_KEYS = {"REDIS_URL": "redis://redis:6379/0", "DATABASE_URL": "postgresql://u:p@postgres/streamfill"}
# Variables in a streamfill container that streamfill does not read, and who does.
NOT_READ = {"REDIS_ADDRESS": "the KEDA redis-streams scaler (addressFromEnv)"}


def check_setting_names(where: str, names: list[str]) -> list[str]:
    """Every name must be one some setting of streamfill reads (workers/_specs.py)."""
    known = known_names()
    return [
        f"{where}: {name} is not a setting streamfill reads (streamfill config reference)"
        for name in names
        if name not in known and name not in NOT_READ
    ]


@cache
def _parser() -> argparse.ArgumentParser:
    return build_parser()  # importing every command module: once


def _outside_the_container(spec: Spec[Any], env: Mapping[str, str]) -> dict[str, str]:
    """`env` with directory settings pointing here: a path inside the container (a mounted
    volume) cannot be checked from outside it, only that the worker accepts a directory."""
    directories = {n for s in spec.settings if s.kind is DIRECTORY for n in s.names}
    here = tempfile.gettempdir()
    return {k: here if k in directories and v.startswith("/") else v for k, v in env.items()}


def worker_config(where: str, args: list[str], env: Mapping[str, str]) -> tuple[Any, list[str]]:
    """Parse `streamfill <args>` and resolve its settings from `env`, as the container would.

    The worker's own settings layer decides (types, bounds, cross-setting rules, refused names);
    its warnings (a variable under our prefixes that nothing reads) count as problems too.
    """
    command = f"`streamfill {' '.join(args)}`"
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parsed = _parser().parse_args(args)
    except SystemExit:
        lines = err.getvalue().strip().splitlines()
        return None, [f"{where}: {command} is not a streamfill command line: {lines[-1] if lines else ''}"]
    spec = {s.kind: s for s in specs()}.get(args[0])
    if spec is None:
        return None, []
    try:
        with contextlib.redirect_stderr(err):
            environ = _outside_the_container(spec, env)
            config = load(spec, parsed, role=getattr(parsed, "role", None), environ=environ).config
    except EdgeError as exc:
        return None, [f"{where}: {command} is refused: {exc}"]
    warnings = [line.removeprefix("streamfill: ") for line in err.getvalue().splitlines() if line.strip()]
    return config, [f"{where}: {command}: {w}" for w in warnings]


def groups_read(config: Any) -> dict[str, str]:
    """stream key -> consumer group, for the workers that read streams with a group; a
    partitioned stream (STREAMFILL_PARTITIONS > 1) is its partitions' keys (workers/_partitions.py)."""
    if hasattr(config, "group_for"):  # indexer
        read = {s: config.group_for(s) for s in config.streams}
    elif hasattr(config, "backfill_stream"):
        read = {config.backfill_stream: config.group}
    else:
        return {}
    parts = partitioning(
        config.prefix, getattr(config, "partitions", 1), [s for s in read if s != "label_live"]
    )
    return {key: group for stream, group in read.items() for key in parts.partition_keys(stream)}


@cache
def load_schema(name: str) -> dict[str, Any]:
    """One of our JSON schemas in compose/json-schemas/, itself checked against its metaschema."""
    schema: dict[str, Any] = json.loads((SCHEMAS / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema
