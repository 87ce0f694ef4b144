"""Lag in seconds: the age of the oldest entry a consumer group has not yet acknowledged.

Stream ids carry the server's clock (milliseconds) when `XADD *` assigned them, so a group's lag
is the server's `TIME` minus the id of its oldest unacknowledged entry: the older of its oldest
pending entry (delivered, not acked) and the first entry after its last-delivered id (not yet
read). Everything is read on the node that holds the stream, in one script call, so the clock
and the ids come from the same server (one node of a cluster per partition).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

# KEYS[1] the stream; ARGV[1] a group name, or '' for every group. Returns
# {now_ms, name1, oldest_ms1 or -1, name2, ...} (-1: the group has acknowledged everything).
# Ids are compared by their millisecond part only (what the age is made of).
_LAG_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {now}
if redis.call('EXISTS', KEYS[1]) == 0 then return out end
local function ms(id) return tonumber(string.match(id, '^(%d+)')) end
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  if ARGV[1] == '' or ARGV[1] == f['name'] then
    local oldest = -1
    if tonumber(f['pending']) > 0 then
      oldest = ms(redis.call('XPENDING', KEYS[1], f['name'])[2])
    end
    if f['lag'] ~= 0 then
      local unread = redis.call('XRANGE', KEYS[1], '(' .. f['last-delivered-id'], '+', 'COUNT', 1)
      if #unread > 0 then
        local first = ms(unread[1][1])
        if oldest < 0 or first < oldest then oldest = first end
      end
    end
    table.insert(out, f['name'])
    table.insert(out, oldest)
  end
end
return out
"""


@dataclass(frozen=True, slots=True)
class GroupLag:
    """How far one group of one stream is behind, in seconds (0.0 when it has acked everything)."""

    stream: str
    group: str
    seconds: float


def _s(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def group_lags(redis: aioredis.Redis, stream: str, group: str = "") -> list[GroupLag]:
    """The lag in seconds of `group` (or of every group) of `stream`; [] if none exists."""
    reply = await redis.eval(_LAG_LUA, 1, stream, group)
    now_ms = int(reply[0])
    lags: list[GroupLag] = []
    for name, oldest in zip(reply[1::2], reply[2::2], strict=True):
        age = 0.0 if int(oldest) < 0 else max(0, now_ms - int(oldest)) / 1000
        lags.append(GroupLag(stream, _s(name), age))
    return lags


async def lag_seconds(redis: aioredis.Redis, watched: Sequence[tuple[str, str]]) -> float:
    """The worst lag in seconds over (stream key, group) pairs, e.g. every partition of the live
    streams; a stream or group that does not exist yet counts as 0."""
    worst = 0.0
    for stream, group in watched:
        for lag in await group_lags(redis, stream, group):
            worst = max(worst, lag.seconds)
    return worst
