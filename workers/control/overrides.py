"""Live overrides of settings, stored in Redis: one hash, setting name -> JSON of the override.

Each override carries its validity window in Redis time (`TIME`, never a local clock): `until_ms`
is computed by the script that writes it, and readers compare it with `TIME` read in the same
round trip. Setting several names is one script call (all or none). An override whose window
has ended is removed by whichever reader sees it first (a script that deletes it only if it is
still the same one), and that reader writes the one `config.expire` audit entry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import redis.asyncio as aioredis

from streams import Keys
from streams.admin import audit

MIN_WINDOW_S = 5.0
MAX_WINDOW_S = 7 * 86_400.0
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str) -> float:
    """Seconds of `30s`, `5m`, `1h30m`, `2d` or a bare number of seconds; ValueError otherwise."""
    value = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        return float(value)
    parts = _PART.findall(value)
    if not value or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"not a duration: {text!r} (say 30s, 5m, 1h30m or 2d)")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def window(text: str) -> float:
    """A `--for` duration within MIN_WINDOW_S..MAX_WINDOW_S, in seconds."""
    seconds = parse_duration(text)
    if not MIN_WINDOW_S <= seconds <= MAX_WINDOW_S:
        raise ValueError(f"--for must be from 5s to 7d, got {text!r}")
    return seconds


@dataclass(frozen=True)
class Override:
    """One active (or just ended) override of a setting, by its environment name."""

    name: str
    value: str
    set_ms: int
    until_ms: int
    reason: str
    operator: str

    @classmethod
    def decode(cls, name: str, raw: bytes | str) -> Override:
        doc = json.loads(raw)
        return cls(
            name,
            str(doc["value"]),
            int(doc["set_ms"]),
            int(doc["until_ms"]),
            str(doc.get("reason", "")),
            str(doc.get("operator", "")),
        )

    def left_s(self, now_ms: int) -> float:
        return max(0.0, (self.until_ms - now_ms) / 1000)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ARGV: window in ms, operator, reason, then name/value pairs. Returns Redis time in ms.
_SET_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local untl = now + tonumber(ARGV[1])
for i = 4, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], cjson.encode({value = ARGV[i + 1], set_ms = now,
    until_ms = untl, operator = ARGV[2], reason = ARGV[3]}))
end
return now
"""

# ARGV: names to remove (none: all). Returns [name, json, ...] of what was removed.
_REVERT_LUA = """
local names = ARGV
if #names == 0 then names = redis.call('HKEYS', KEYS[1]) end
local out = {}
for _, name in ipairs(names) do
  local raw = redis.call('HGET', KEYS[1], name)
  if raw then
    redis.call('HDEL', KEYS[1], name)
    table.insert(out, name)
    table.insert(out, raw)
  end
end
return out
"""

# Returns [Redis time in ms, [name, json, ...]].
_READ_LUA = """
local t = redis.call('TIME')
return {tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), redis.call('HGETALL', KEYS[1])}
"""

# Removes the overrides whose window ended (Redis time); returns [name, json, ...] removed.
_SWEEP_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local ok, doc = pcall(cjson.decode, all[i + 1])
  if not ok or tonumber(doc['until_ms']) <= now then
    redis.call('HDEL', KEYS[1], all[i])
    table.insert(out, all[i])
    table.insert(out, all[i + 1])
  end
end
return out
"""


def _s(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


class OverrideStore:
    """Reads and writes the overrides hash (`Keys.overrides`), and audits every change."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._key = keys.overrides()

    async def set(
        self, values: Mapping[str, str], window_s: float, *, reason: str, operator: str
    ) -> list[Override]:
        """Stage every override in one script call, then audit it (`config.set`)."""
        argv: list[str | int] = [int(window_s * 1000), operator, reason]
        for name, value in values.items():
            argv += [name, value]
        await self._redis.eval(_SET_LUA, 1, self._key, *argv)
        _, active = await self.active()
        staged = [active[name] for name in values if name in active]
        for o in staged:
            await audit(self._redis, self._keys, "config.set", **_audited(o))
        return staged

    async def revert(self, names: Sequence[str]) -> list[Override]:
        """End the overrides of `names` (none: all) now; audited (`config.revert`)."""
        reply = await self._redis.eval(_REVERT_LUA, 1, self._key, *names)
        removed = _decode_pairs(reply)
        for o in removed:
            await audit(self._redis, self._keys, "config.revert", **_audited(o))
        return removed

    async def sweep(self) -> list[Override]:
        """Remove the overrides whose window ended; the caller that removed one audits it."""
        reply = await self._redis.eval(_SWEEP_LUA, 1, self._key)
        expired = _decode_pairs(reply)
        for o in expired:
            await audit(self._redis, self._keys, "config.expire", **_audited(o))
        return expired

    async def snapshot(self) -> tuple[int, list[Override]]:
        """(Redis time in ms, every stored override, ended ones included), in one script call
        (on Redis Cluster, TIME cannot be pipelined: a script on the hash's node reads both)."""
        now_ms, raw = await self._redis.eval(_READ_LUA, 1, self._key)
        return int(now_ms), _decode_pairs(raw)

    async def active(self) -> tuple[int, dict[str, Override]]:
        """(Redis time in ms, the overrides whose window has not ended)."""
        now_ms, found = await self.snapshot()
        return now_ms, {o.name: o for o in found if o.until_ms > now_ms}


def _decode_all(items: Iterable[tuple[Any, Any]]) -> list[Override]:
    out = []
    for name, raw in items:
        try:
            out.append(Override.decode(_s(name), raw))
        except (ValueError, KeyError, TypeError):
            continue  # not ours to read: the sweep removes it
    return out


def _decode_pairs(reply: Sequence[Any]) -> list[Override]:
    return _decode_all(zip(reply[::2], reply[1::2], strict=True))


def _audited(o: Override) -> dict[str, object]:
    """An override as audit args (`operator` of the entry is who acted; `set_by` who set it)."""
    return {
        "name": o.name,
        "value": o.value,
        "until_ms": o.until_ms,
        "reason": o.reason,
        "set_by": o.operator,
    }
