"""Value types of settings: how a text (a flag or an environment variable) becomes a value.

A parser raises ValueError with what is allowed ("an integer", "one of a, b"); the caller adds
the setting's name and the text it was given.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True)
class Kind:
    """A value type: its name in help texts, a parser, and how a value is shown."""

    name: str
    parse: Callable[[str], object]
    metavar: str = "VALUE"
    numeric: bool = False
    flag_action: str | None = None  # "bool": --x / --no-x

    def show(self, value: object) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, tuple):
            return ",".join(str(v) for v in value)
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)


def masked(text: str) -> str:
    """`text` with the password of a URL in it replaced by `***` (anything else unchanged)."""
    try:
        parts = urlsplit(text)
        password = parts.password
    except ValueError:
        return text
    if not password:
        return text
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _int(text: str) -> int:
    try:
        return int(text.strip().replace("_", ""))
    except ValueError:
        raise ValueError("an integer") from None


def _float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError("a number") from None
    if not math.isfinite(value):
        raise ValueError("a finite number")
    return value


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("true or false (also 1/0, yes/no, on/off)")


def _name(text: str) -> str:
    value = text.strip()
    if not value or any(c.isspace() for c in value):
        raise ValueError("a name without spaces")
    return value


def _prefix(text: str) -> str:
    value = text.strip()
    if any(c.isspace() or c in "*?[]" for c in value):
        raise ValueError("a key prefix without spaces or glob characters")
    return value


def _names(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    if not parts or any(any(c.isspace() for c in p) for p in parts):
        raise ValueError("a comma-separated list of names")
    return parts


def url_parser(schemes: tuple[str, ...], what: str) -> Callable[[str], str]:
    """A parser of URLs with one of `schemes` and a host (or a socket: a unix:// path, or a
    `?host=/dir` query as libpq URLs have)."""
    allowed = f"{what} URL ({', '.join(s + '://' for s in schemes)})"

    def parse(text: str) -> str:
        value = text.strip()
        try:
            parts = urlsplit(value)
            _ = parts.port  # raises ValueError on a malformed port
        except ValueError:
            raise ValueError(allowed) from None
        socket = (parts.scheme == "unix" and parts.path) or "host=" in parts.query
        if parts.scheme not in schemes or not (parts.hostname or socket):
            raise ValueError(allowed)
        return value

    return parse


def _host_list(text: str) -> tuple[str, ...]:
    """Relay or labeler hosts: `https://host[:port]`, or a bare `host[:port]` (rsky style)."""
    hosts = tuple(p.strip() for p in text.split(",") if p.strip())
    plain = url_parser(("http", "https", "ws", "wss"), "an http(s)")
    for host in hosts:
        if "://" in host:
            plain(host)
        elif not host or any(c.isspace() or c in "/?#@" for c in host):
            raise ValueError("comma-separated hosts (https://host[:port] or host[:port])")
    return hosts


def choice(*choices: str, synonyms: dict[str, str] | None = None) -> Kind:
    """One of `choices` (case-insensitive); `synonyms` map other spellings onto them."""
    table = {c: c for c in choices} | dict(synonyms or {})

    def parse(text: str) -> str:
        try:
            return table[text.strip().lower()]
        except KeyError:
            raise ValueError(f"one of {', '.join(choices)}") from None

    return Kind("choice", parse, metavar="{" + ",".join(choices) + "}")


def _directory(text: str) -> Path:
    if not text.strip():
        raise ValueError("a directory path")
    return Path(text.strip())


INT = Kind("integer", _int, metavar="N", numeric=True)
FLOAT = Kind("number", _float, metavar="X", numeric=True)
BOOL = Kind("boolean", _bool, metavar="BOOL", flag_action="bool")
NAME = Kind("name", _name, metavar="NAME")
PREFIX = Kind("prefix", _prefix, metavar="PREFIX")
NAMES = Kind("names", _names, metavar="A,B")
HOSTS = Kind("hosts", _host_list, metavar="URL,URL")
TEXT = Kind("text", str.strip, metavar="TEXT")
DIRECTORY = Kind("directory", _directory, metavar="DIR")
REDIS_URL = Kind("url", url_parser(("redis", "rediss", "unix"), "a Redis"), metavar="URL")
POSTGRES_URL = Kind("url", url_parser(("postgresql", "postgres"), "a PostgreSQL"), metavar="URL")
_http_url = url_parser(("http", "https"), "an http(s)")
HTTP_URL = Kind("url", lambda text: _http_url(text).rstrip("/"), metavar="URL")
LOG_LEVEL = choice(
    "debug", "info", "warning", "error", synonyms={"trace": "debug", "warn": "warning", "critical": "error"}
)
