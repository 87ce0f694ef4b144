"""One repo job: resolve the DID, download the CAR, verify it, write one event per record.

The job is acked only after every record event and the closing `repo` marker are in
`firehose_backfill`; a redelivered job writes its events again, which the indexer makes harmless.
A record whose key is not a valid record key (over 512 characters, or outside the charset) is
not written: its event goes to `firehose_backfill:dlq` (reason `invalid-record-key`) and the rest
of the repo is backfilled. A 429 puts the host in back-off, published for `streamfill status`.

A job for a repo listed as inactive, or one whose PDS says it is inactive or unknown, ends as an
outcome (acked, counted, listed); the ingester enqueues a new job when the account becomes active
again (`#account active=true`). Before such an answer is believed the DID is resolved afresh: an
account that moved is fetched from its new PDS.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any
from urllib.parse import urlsplit

import anyio
import msgspec
import orjson
import redis.asyncio as aioredis
from anyio.streams.memory import MemoryObjectReceiveStream
from opentelemetry import metrics

from atp import (
    AtpError,
    DidResolutionError,
    InvalidDid,
    RateLimited,
    RepoDeactivated,
    RepoNotFound,
    RepoSuspended,
    RepoTakendown,
    SignatureError,
    cbor,
)
from atp.crypto import PublicKey
from atp.did import validate_did
from atp.repo import read_repo
from atp.syntax import is_record_key
from atp.xrpc import XrpcClient
from schemas import BACKFILL_SEQ, RecordCreate, RepoJob, RepoMarker, SchemaError, contract_for
from streams import (
    DONE,
    DeadLetter,
    Entry,
    Keys,
    Outcome,
    Producer,
    Retry,
    Slots,
    StreamNames,
    classify,
    dead_letter_fields,
    dlq_key,
)
from workers._identity import IdentityCache
from workers.backfiller.config import BackfillerConfig
from workers.backfiller.hosts import HostBusy, HostLimiter

log = logging.getLogger("streamfill.backfiller")
# What a backfiller reads (repo jobs) and writes (record events and markers), whatever the
# configured streams are named.
_JOBS = contract_for(StreamNames.REPO_BACKFILL)
_RECORDS = contract_for(StreamNames.FIREHOSE_BACKFILL)

# Expected end states of a repo, not failures: acked, counted and listed in the outcome stream.
PERMANENT_OUTCOMES: dict[type[Exception], str] = {
    RepoNotFound: "not_found",
    RepoTakendown: "takendown",
    RepoDeactivated: "deactivated",
    RepoSuspended: "suspended",
}
INACTIVE_STATUSES = {"takendown", "deactivated", "suspended", "deleted", "desynchronized", "throttled"}
# Outcome stream entries kept (approximate MAXLEN): enough for an operator to list and count.
OUTCOMES_MAXLEN = 1_000_000


class BackfillHandler:
    """Handles `repo_backfill` entries: the repos of a batch at once, at most `concurrency` repos
    over all batches (a batch's entries may wait here, pending and leased, for a repo slot)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        config: BackfillerConfig,
        producer: Producer,
        identities: IdentityCache,
        xrpc: XrpcClient,
        limiter: HostLimiter,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._config = config
        self._producer = producer
        self._identities = identities
        self._xrpc = xrpc
        self._limiter = limiter
        self._out_stream = producer.config.stream
        self._backoff_key = keys.backoff(keys.stream(config.backfill_stream), config.consumer)
        # Repos worked on at once. A read delivers up to `repos_per_read` jobs to a handler slot
        # (one XREADGROUP, one XACK, one lease for them all); the repos of a batch start as slots
        # free here, so a big repo holds one slot, never its batch's others.
        self._repos = Slots(config.concurrency)
        self.repos_done = 0
        self.records_written = 0

    @property
    def concurrency(self) -> int:
        """Repos worked on at once."""
        return self._repos.total

    def retune(self, concurrency: int) -> None:
        """A new number of repos worked on at once (a live override)."""
        self._repos.resize(concurrency)

    async def __call__(self, entries: Sequence[Entry]) -> Sequence[Outcome]:
        if len(entries) == 1:
            return [await self._in_slot(entries[0])]
        outcomes: list[Outcome] = [DONE] * len(entries)

        async def one(i: int) -> None:
            try:
                outcomes[i] = await self._in_slot(entries[i])
            except Exception as exc:  # as the consumer treats a failed handler call, per repo
                log.warning("repo job failed", extra={"error": f"{type(exc).__name__}: {exc}"})
                outcomes[i] = classify(exc)

        async with anyio.create_task_group() as tg:
            for i in range(len(entries)):
                tg.start_soon(one, i)
        return outcomes

    async def _in_slot(self, entry: Entry) -> Outcome:
        await self._repos.acquire()
        try:
            return await self.handle(entry)
        finally:
            self._repos.release()

    async def handle(self, entry: Entry) -> Outcome:
        try:
            job = _JOBS.decode(entry.fields)
            assert isinstance(job, RepoJob)
            validate_did(job.did)
        except (SchemaError, InvalidDid) as exc:
            return DeadLetter(reason="invalid-job", error=str(exc))
        try:
            return await self._backfill(job, entry.deliveries)
        except tuple(PERMANENT_OUTCOMES) as exc:
            await self._record_outcome(job, PERMANENT_OUTCOMES[type(exc)], str(exc))
            return DONE
        except RateLimited as exc:  # the host's politeness, not the job's fault: do not use up retries
            return Retry(error=f"RateLimited: {exc}", delay_s=exc.retry_after_s, counted=False)
        except HostBusy as exc:
            return Retry(error=str(exc), delay_s=exc.retry_after_s, counted=False)
        except DidResolutionError as exc:
            if exc.permanent:
                await self._record_outcome(job, "did_unresolvable", str(exc))
                return DONE
            return Retry(error=f"DidResolutionError: {exc}")
        except SignatureError as exc:
            await self._identities.evict(job.did)  # the key may have rotated: re-resolve next time
            if entry.deliveries < 2:
                return Retry(error=f"SignatureError: {exc}", delay_s=0.0)
            return DeadLetter(reason="bad-signature", error=str(exc))
        except (AtpError, msgspec.ValidationError, ValueError) as exc:
            return classify(exc, reason=f"{type(exc).__name__}")

    async def _backfill(self, job: RepoJob, deliveries: int) -> Outcome:
        if not job.active or (job.status or "active") in INACTIVE_STATUSES:
            await self._record_outcome(job, job.status or "inactive", "listed as inactive by the relay")
            return DONE
        started = time.perf_counter()
        identity = await self._identities.resolve(job.did)
        try:
            count = await self._from_pds(job, identity)
        except tuple(PERMANENT_OUTCOMES):
            # The cached DID document may name a PDS the account has left (which says "not found"
            # or "deactivated" about it): resolve afresh and ask the current one before giving up.
            await self._identities.evict(job.did)
            fresh = await self._identities.resolve(job.did)
            if fresh.pds_endpoint == identity.pds_endpoint:
                raise
            log.info(
                "repo moved", extra={"did": job.did, "from": identity.pds_endpoint, "to": fresh.pds_endpoint}
            )
            count = await self._from_pds(job, fresh)
        self.repos_done += 1
        self.records_written += count
        log.info(
            "repo backfilled",
            extra={"did": job.did, "records": count, "seconds": round(time.perf_counter() - started, 3)},
        )
        return DONE

    async def _from_pds(self, job: RepoJob, identity: Any) -> int:
        host = urlsplit(identity.pds_endpoint).netloc or identity.pds_endpoint
        key = None if self._config.skip_signature_verification else identity.signing_key
        try:
            async with self._limiter.slot(host):
                return await self._download_and_write(job, identity.pds_endpoint, key)
        except RateLimited as exc:
            self._limiter.throttled(host, exc.retry_after_s or 5.0)
            await self._publish_backoff()
            raise

    async def _download_and_write(self, job: RepoJob, pds: str, key: PublicKey | None) -> int:
        async with self._xrpc.get_repo(
            pds,
            job.did,
            max_bytes=self._config.max_repo_bytes,
            timeout_s=self._config.http_timeout_s,
            min_bytes_per_s=self._config.min_download_bytes_per_s,
        ) as chunks:
            reader = await read_repo(
                chunks,
                did=job.did,
                signing_key=key,
                memory_bytes=self._config.repo_memory_bytes,
            )
        invalid: list[dict[bytes, bytes]] = []
        try:
            count = await self._write_records(job, reader, invalid)
        finally:
            reader.close()
        if invalid:
            await self._dead_letter_records(job, invalid)
        return count

    async def _write_records(self, job: RepoJob, reader: Any, invalid: list[dict[bytes, bytes]]) -> int:
        """Write the repo's events batch by batch; the count of records written."""
        counter = [0]
        async with contextlib.aclosing(self._batches(job, reader, invalid, counter)) as batches:
            first, last = await anext(batches)
            if last:  # most repos fit in one batch: no writer task to start
                await self._producer.send(first)
                return counter[0]
            # One batch is written while the next is built: decoding is CPU, XADD mostly waiting
            # on Redis, so overlapping them keeps this process busy. Order is kept (one sender),
            # and memory stays at two batches.
            send, receive = anyio.create_memory_object_stream[list[dict[bytes, bytes]]](1)
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._sender, receive)
                    async with send:
                        await send.send(first)
                        async for batch, _ in batches:
                            await send.send(batch)
            except BaseExceptionGroup as group:
                # anyio wraps even a lone failure: unwrap it so a bad repo found while walking
                # (MstError, MissingBlockError, CborError) is classified like one found earlier.
                if len(group.exceptions) == 1 and isinstance(group.exceptions[0], Exception):
                    raise group.exceptions[0] from None
                raise
        return counter[0]

    async def _batches(
        self, job: RepoJob, reader: Any, invalid: list[dict[bytes, bytes]], counter: list[int]
    ) -> AsyncGenerator[tuple[list[dict[bytes, bytes]], bool]]:
        """(batch, is the last) of encoded events; the `repo` marker ends the last batch."""
        rev = reader.commit.rev or ""
        size = self._config.batch_size
        batch: list[dict[bytes, bytes]] = []
        count = 0
        async for part in reader.slices():  # slices of bounded work, yielding in between
            for collection, rkey, cid, record in zip(*part, strict=True):
                event = RecordCreate(
                    seq=BACKFILL_SEQ,
                    did=job.did,
                    rev=rev,
                    collection=collection,
                    rkey=rkey,
                    cid=cid,
                    record=msgspec.Raw(cbor.to_json_bytes(record)),
                    campaign=job.campaign,
                )
                if not is_record_key(rkey):
                    invalid.append(_RECORDS.encode(event))
                    continue
                batch.append(_RECORDS.encode(event))
                count += 1
                if len(batch) >= size:
                    yield batch, False
                    batch = []
        counter[0] = count
        marker = RepoMarker(
            seq=BACKFILL_SEQ,
            did=job.did,
            rev=rev,
            commit=reader.commit.cid,
            records=count,
            campaign=job.campaign,
        )
        batch.append(_RECORDS.encode(marker))
        yield batch, True  # the marker goes last, after every record of the snapshot

    async def _sender(self, receive: MemoryObjectReceiveStream[list[dict[bytes, bytes]]]) -> None:
        async with receive:
            async for batch in receive:
                await self._producer.send(batch)

    async def _dead_letter_records(self, job: RepoJob, invalid: list[dict[bytes, bytes]]) -> None:
        """Record events we refused to write, in the DLQ of the stream they were meant for."""
        async with self._redis.pipeline(transaction=True) as pipe:
            for fields in invalid:
                dead = dead_letter_fields(
                    fields,
                    reason="invalid-record-key",
                    error="record key is not 1-512 characters of A-Za-z0-9._:~-",
                    consumer=self._config.consumer,
                    source_stream=self._out_stream,
                    context={"did": job.did},
                )
                # redis-py's annotations want str field names; bytes are what it sends anyway.
                pipe.xadd(dlq_key(self._out_stream), dead)  # type: ignore[arg-type]
            await pipe.execute()
        log.warning("records with invalid keys dead-lettered", extra={"did": job.did, "count": len(invalid)})

    async def _publish_backoff(self) -> None:
        """Write this consumer's hosts in back-off where `streamfill status` reads them (with a TTL)."""
        hosts = self._limiter.backing_off()
        if not hosts:
            await self._redis.delete(self._backoff_key)
            return
        ttl = max(1, math.ceil(max(h["until"] for h in hosts.values()) - time.time()))
        await self._redis.set(self._backoff_key, orjson.dumps(hosts), ex=ttl)

    async def _record_outcome(self, job: RepoJob, outcome: str, detail: str) -> None:
        _outcome_counter().add(1, {"outcome": outcome})
        await self._redis.xadd(
            self._keys.outcomes(StreamNames.REPO_BACKFILL),
            {
                "did": job.did,
                "host": job.host,
                "outcome": outcome,
                "detail": detail[:500],
                "at": f"{time.time():.3f}",
            },
            maxlen=OUTCOMES_MAXLEN,
            approximate=True,
        )


_OUTCOMES: Any = None


def _outcome_counter() -> Any:
    global _OUTCOMES
    if _OUTCOMES is None:
        _OUTCOMES = metrics.get_meter("streamfill").create_counter(
            "streamfill_backfill_outcomes", description="repos ending in a permanent outcome, by outcome"
        )
    return _OUTCOMES
