"""The errors `streams` raises, and the one place that translates redis-py's.

    StreamsError                     base of every error this package raises on purpose
    ├── AdminError                   an operator asked for what does not exist or cannot be done
    ├── UnsupportedServer            the server is older than the runtime supports (RuntimeError too)
    ├── ReplicationLagError          WAIT: no replica confirmed a batch; the batch is not acknowledged
    ├── ClusterStartError            an embedded cluster did not come up (RuntimeError too)
    ├── RedisUnavailable             Redis stayed away longer than REDIS_RECONNECT_S
    │                                (a redis ConnectionError too: the edge's one line covers it)
    ├── SourceError                  a source's upstream failed a session (`SourceRunner` backs
    │                                off, skips ahead or gives up; raised by sources, not redis)
    └── GroupError                   a consumer-group reply, translated (`translate`)
        ├── GroupExists              BUSYGROUP: the group is already there
        └── NoGroup                  NOGROUP: no such stream or group

Everything else from redis-py (connection errors, timeouts, other `ResponseError`s) passes
through as it is: the runtime's supervision (`_supervise.py`) and the command edge
(`workers/_edge.py`) know those.
"""

from __future__ import annotations

from redis import exceptions as rex

__all__ = [
    "AdminError",
    "ClusterStartError",
    "GroupError",
    "GroupExists",
    "NoGroup",
    "RedisUnavailable",
    "ReplicationLagError",
    "SourceError",
    "StreamsError",
    "UnsupportedServer",
    "translate",
]


class StreamsError(Exception):
    """Base of the errors `streams` raises on purpose."""


class AdminError(StreamsError):
    """An operator asked for something that does not exist or cannot be done."""


class UnsupportedServer(StreamsError, RuntimeError):
    """The server is older than the runtime supports."""


class ReplicationLagError(StreamsError):
    """A master did not confirm that a batch reached a replica: the batch is not acknowledged."""


class ClusterStartError(StreamsError, RuntimeError):
    """An embedded Redis Cluster could not be started."""


class RedisUnavailable(StreamsError, rex.ConnectionError):
    """Redis stayed unreachable for longer than the reconnect window."""

    def __init__(self, window_s: float, last: BaseException) -> None:
        super().__init__(f"no answer for {window_s:g} s (REDIS_RECONNECT_S): {type(last).__name__}: {last}")
        self.window_s = window_s


class SourceError(StreamsError):
    """A source's upstream failed this session; its runner backs off and starts another.

    `skippable`: the upstream answered, so the failure is at this position (it counts toward
    skip-ahead); otherwise the upstream is away and is waited for. `permanent`: do not wait for
    it (with `give_up_after`, the pass ends at once). `retry_after_s`: the upstream's own delay.
    `disconnect`: the upstream ended a session that was working (a relay closing a long
    connection): when the session moved the cursor, the next one starts at once, uncounted.
    """

    def __init__(
        self,
        message: str,
        *,
        skippable: bool = False,
        permanent: bool = False,
        retry_after_s: float | None = None,
        disconnect: bool = False,
    ) -> None:
        super().__init__(message)
        self.disconnect = disconnect
        self.skippable = skippable
        self.permanent = permanent
        self.retry_after_s = retry_after_s


class GroupError(StreamsError):
    """A consumer-group command refused, as redis-py reported it (`__cause__`)."""


class GroupExists(GroupError):
    """BUSYGROUP: the consumer group already exists."""


class NoGroup(GroupError):
    """NOGROUP: the stream or the consumer group does not exist."""


_CODES: dict[str, type[GroupError]] = {"BUSYGROUP": GroupExists, "NOGROUP": NoGroup}


def translate(exc: rex.ResponseError) -> Exception:
    """The `streams` error for a redis-py reply error, or `exc` itself when none applies.

    Redis error replies start with an upper-case code (`BUSYGROUP Consumer Group name already
    exists`); this is the only place that reads it.
    """
    code = str(exc).split(" ", 1)[0]
    kind = _CODES.get(code)
    if kind is None:
        return exc
    error = kind(str(exc))
    error.__cause__ = exc
    return error
