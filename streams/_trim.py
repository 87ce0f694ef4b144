"""`trim`: remove, in one atomic step, the entries every consumer group has read and acknowledged."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from streams._admin import as_text
from streams._audit import audit
from streams._errors import AdminError
from streams._keys import Keys

# The trim rule, evaluated and applied in one atomic step (a group reset or created between
# reading the groups and trimming would otherwise lose entries). An entry may go only when every
# group has both read it (id <= last-delivered-id: `XREADGROUP >` never returns it again) and
# acknowledged it (not in the PEL). So the MINID is the minimum over the groups of
# min(oldest pending id, the id right after last-delivered-id). A group's `lag`/`entries-read`
# are counters Redis may not know (null after XGROUP SETID, or once entries were deleted); the
# last-delivered id is what decides what the group reads next, so the rule uses it.
# Ids are compared as (ms, seq) decimal strings: a seq may exceed Lua's exact integers.
# Returns {minid, removed, group, reason}; minid is '' when the stream has no group.
_TRIM_LUA = """
local function less(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if am ~= bm then
    if #am ~= #bm then return #am < #bm end
    return am < bm
  end
  if #as ~= #bs then return #as < #bs end
  return as < bs
end
local function incr(d)
  local out, carry = '', 1
  for i = #d, 1, -1 do
    local c = string.byte(d, i) - 48 + carry
    if c == 10 then c, carry = 0, 1 else carry = 0 end
    out = string.char(48 + c) .. out
  end
  if carry == 1 then out = '1' .. out end
  return out
end
local function succ(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  if seq == '18446744073709551615' then return incr(ms) .. '-0' end
  return ms .. '-' .. incr(seq)
end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return {'', 0, '', ''} end
local minid, holder, why = nil, '', ''
for _, g in ipairs(groups) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  local bound, reason = succ(f['last-delivered-id']), 'unread'
  if tonumber(f['pending']) > 0 then
    local oldest = redis.call('XPENDING', KEYS[1], f['name'])[2]
    if less(oldest, bound) then bound, reason = oldest, 'pending' end
  end
  if minid == nil or less(bound, minid) then minid, holder, why = bound, f['name'], reason end
end
local removed = 0
if ARGV[1] == '1' then removed = redis.call('XTRIM', KEYS[1], 'MINID', minid) end
return {minid, removed, holder, why}
"""


@dataclass(frozen=True)
class TrimPlan:
    """What `trim` may remove from a stream, and which group holds the rest back.

    `minid`: entries with a smaller id are read and acknowledged by every group (None: the
    stream has no group, so nothing says what was read and nothing may go). `held_by` is the
    group whose need sets `minid`, `reason` why: "pending" (its oldest unacknowledged entry) or
    "unread" (the entry after its last-delivered id). `removed`: entries trimmed (0 for a plan).
    """

    stream: str
    minid: str | None
    held_by: str | None
    reason: str | None
    removed: int = 0


async def _trim_script(redis: aioredis.Redis, stream: str, *, apply: bool) -> TrimPlan:
    if not await redis.exists(stream):
        raise AdminError(f"no such stream: {stream}")
    minid, removed, group, reason = await redis.eval(_TRIM_LUA, 1, stream, "1" if apply else "0")
    if not as_text(minid):
        return TrimPlan(stream, None, None, None)
    return TrimPlan(stream, as_text(minid), as_text(group), as_text(reason), int(removed))


async def safe_trim_id(redis: aioredis.Redis, stream: str) -> str | None:
    """The MINID `trim` would use: every entry below it is read and acked by every group.

    None when the stream has no group (nothing may go)."""
    return (await _trim_script(redis, stream, apply=False)).minid


async def trim_stream(redis: aioredis.Redis, keys: Keys, stream: str, *, audited: bool = True) -> TrimPlan:
    """Trim, in one atomic step, the entries every group has read and acknowledged."""
    plan = await _trim_script(redis, stream, apply=True)
    if audited:
        await audit(
            redis,
            keys,
            "trim",
            stream=stream,
            minid=plan.minid,
            removed=plan.removed,
            held_by=plan.held_by,
            reason=plan.reason,
        )
    return plan


async def trim(redis: aioredis.Redis, keys: Keys, stream: str, *, audited: bool = True) -> int:
    """Trim the entries every group has read and acknowledged; returns how many were removed."""
    return (await trim_stream(redis, keys, stream, audited=audited)).removed
