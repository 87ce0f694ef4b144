"""docker-compose.yml: interpolate `${VAR}` as Compose does with every variable unset, check the
result against compose/json-schemas/compose-subset.schema.json, then references (depends_on, named
volumes, profiles) and the command and settings of every streamfill service."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from deploy_settings import IMAGE, ROOT, check_setting_names, load_schema, worker_config

COMPOSE_FILE = ROOT / "compose" / "docker-compose.yml"


class InterpolationError(ValueError):
    """A `${...}` that Compose would refuse."""


def _name_end(text: str, start: int) -> int:
    end = start
    while end < len(text) and (text[end].isalnum() or text[end] == "_"):
        end += 1
    if end == start:
        raise InterpolationError(f"no variable name at {text[start - 2 :]!r}")
    return end


def _braced(text: str, i: int, env: dict[str, str]) -> tuple[str, int]:
    """`${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?err}`, `${NAME?err}` at text[i:]."""
    end = _name_end(text, i + 2)
    name, rest = text[i + 2 : end], text[end:]
    operator = next((op for op in (":-", "-", ":?", "?") if rest.startswith(op)), "")
    if not operator:
        if not rest.startswith("}"):
            raise InterpolationError(f"unterminated ${{{name} in {text!r}")
        return env.get(name, ""), end + 1
    default, after = interpolate(text, env, end + len(operator), closing=True)
    value = env.get(name)
    unset = value is None or (operator.startswith(":") and value == "")
    if unset and operator.endswith("?"):
        raise InterpolationError(f"{name} is required: {default}")
    return (default if unset else value or ""), after


def interpolate(text: str, env: dict[str, str], i: int = 0, *, closing: bool = False) -> tuple[str, int]:
    """Compose's interpolation of text[i:], up to the `}` that closes a default when `closing`."""
    out: list[str] = []
    while i < len(text):
        char = text[i]
        if closing and char == "}":
            return "".join(out), i + 1
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            value, i = _braced(text, i, env)
            out.append(value)
        elif char == "$" and i + 1 < len(text) and (text[i + 1].isalpha() or text[i + 1] == "_"):
            end = _name_end(text, i + 1)
            out.append(env.get(text[i + 1 : end], ""))
            i = end
        else:
            out.append(char)
            i += 1
    if closing:
        raise InterpolationError(f"unterminated default in {text!r}")
    return "".join(out), i


def resolve(node: Any, env: dict[str, str], where: str, problems: list[str]) -> Any:
    """Interpolate every string value (not keys) of a parsed compose file."""
    if isinstance(node, dict):
        return {k: resolve(v, env, f"{where}.{k}", problems) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(v, env, f"{where}[{i}]", problems) for i, v in enumerate(node)]
    if isinstance(node, str):
        try:
            return interpolate(node, env)[0]
        except InterpolationError as exc:
            problems.append(f"{where}: {exc}")
    return node


def _started_with(service: dict[str, Any], dependency: dict[str, Any]) -> bool:
    """Whether every set of profiles that starts `service` also starts `dependency`."""
    needs = set(dependency.get("profiles", []))
    return not needs or (bool(service.get("profiles")) and set(service["profiles"]) <= needs)


def _references(name: str, service: dict[str, Any], services: dict[str, Any], volumes: set[str]) -> list[str]:
    problems = []
    for dep in service.get("depends_on", {}):
        if dep not in services:
            problems.append(f"services.{name}: depends_on {dep}, which is not a service")
        elif not _started_with(service, services[dep]):
            problems.append(f"services.{name}: depends_on {dep}, which a profile can leave out")
    for mount in service.get("volumes", []):
        source = mount.split(":", 1)[0]
        if not source.startswith((".", "/", "~")) and source not in volumes:
            problems.append(f"services.{name}: volume {source} is not declared under volumes:")
    return problems


def _build(name: str, service: dict[str, Any], base: Path) -> list[str]:
    """The build context and Dockerfile exist, and so does every local path the Dockerfile COPYs."""
    if "build" not in service:
        return []
    context = (base / service["build"]["context"]).resolve()
    dockerfile = context / service["build"].get("dockerfile", "Dockerfile")
    if not dockerfile.is_file():
        return [f"services.{name}: build: no Dockerfile at {dockerfile}"]
    problems = []
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if words[:1] != ["COPY"] or any(w.startswith("--from") for w in words):
            continue
        sources = [w for w in words[1:-1] if not w.startswith("--")]
        problems += [f"{dockerfile.name}: COPY {src}: not in the build context" for src in sources
                     if not (context / src).exists()]  # fmt: skip
    return problems


def _streamfill_service(name: str, service: dict[str, Any]) -> list[str]:
    """A service of our image that runs `streamfill <command>`: real command, real settings."""
    if service.get("image", "").split(":")[0].split("/")[-1] != IMAGE or "entrypoint" in service:
        return []
    where = f"services.{name}"
    command = service.get("command", [])
    args = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    env = {k: "" if v is None else str(v) for k, v in service.get("environment", {}).items()}
    return check_setting_names(where, sorted(env)) + worker_config(where, args, env)[1]


def check_compose(path: Path = COMPOSE_FILE, env: dict[str, str] | None = None) -> list[str]:
    """Every problem of the compose file at `path`, interpolated with `env` (default: nothing set)."""
    problems: list[str] = []
    raw = yaml.safe_load(path.read_text())  # anchors and `<<` merge keys resolved here
    doc = resolve(raw, env or {}, path.name, problems)
    validator = jsonschema.Draft202012Validator(load_schema("compose-subset.schema.json"))
    problems += [
        f"{'.'.join(map(str, e.path)) or path.name}: {e.message}" for e in validator.iter_errors(doc)
    ]
    if problems:
        return problems
    services: dict[str, Any] = doc["services"]
    volumes = set(doc.get("volumes") or {})
    builds: dict[str, str] = {}  # services sharing one image definition (an anchor) are checked once
    for name, service in services.items():
        problems += _references(name, service, services, volumes)
        builds.setdefault(repr(service.get("build")), name)
        problems += _streamfill_service(name, service)
    for name in builds.values():
        problems += _build(name, services[name], path.parent)
    return problems
