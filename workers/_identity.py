"""DID -> (PDS endpoint, signing key), cached in Redis with a TTL and in process memory.

Shared by the backfiller (where to download a repo, which key signs it) and the ingester
(verifying firehose commits). A cache hit costs no network call; a miss resolves through the
PLC directory (did:plc) or /.well-known/did.json (did:web).
"""

from __future__ import annotations

from collections import OrderedDict

import orjson
import redis.asyncio as aioredis

from atp import DidResolutionError, parse_did_key
from atp.did import DidResolver, ResolvedDid
from streams import Keys

# PLC documents change rarely (key rotation, PDS migration); an hour bounds how long a stale
# answer can make us verify with an old key. A signature failure also evicts the entry.
DEFAULT_TTL_S = 3600
_MEMORY_ENTRIES = 50_000


class IdentityCache:
    """Resolves DIDs through Redis and memory caches in front of a `DidResolver`."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, resolver: DidResolver, ttl_s: int = DEFAULT_TTL_S):
        self._redis = redis
        self._keys = keys
        self._resolver = resolver
        self._ttl_s = ttl_s
        self._memory: OrderedDict[str, ResolvedDid] = OrderedDict()

    async def resolve(self, did: str) -> ResolvedDid:
        hit = self._memory.get(did)
        if hit is not None:
            self._memory.move_to_end(did)
            return hit
        resolved = await self._from_redis(did) or await self._resolve_and_store(did)
        self._remember(resolved)
        return resolved

    async def evict(self, did: str) -> None:
        self._memory.pop(did, None)
        await self._redis.delete(self._keys.cache("did", did))

    def _remember(self, resolved: ResolvedDid) -> None:
        self._memory[resolved.did] = resolved
        if len(self._memory) > _MEMORY_ENTRIES:
            self._memory.popitem(last=False)

    async def _from_redis(self, did: str) -> ResolvedDid | None:
        raw = await self._redis.get(self._keys.cache("did", did))
        if raw is None:
            return None
        try:
            doc = orjson.loads(raw)
            return ResolvedDid(did, doc["pds"], parse_did_key(doc["key"]), doc.get("handle"))
        except (ValueError, KeyError, TypeError):
            return None  # a corrupt cache entry is just a miss

    async def _resolve_and_store(self, did: str) -> ResolvedDid:
        resolved = await self._resolver.resolve(did)
        doc = {"pds": resolved.pds_endpoint, "key": resolved.signing_key.did_key(), "handle": resolved.handle}
        await self._redis.set(self._keys.cache("did", did), orjson.dumps(doc), ex=self._ttl_s)
        return resolved


__all__ = ["DidResolutionError", "IdentityCache"]
