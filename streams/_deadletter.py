"""One layout for every dead letter, whoever writes it.

A dead letter is the refused payload's own fields (an entry's fields, a frame, a listing item)
followed by the same metadata everywhere:

    reason         a stable, machine-readable word (e.g. max-deliveries, undecodable-frame)
    attempts       deliveries (consumers) or 1 (sources)
    error          what went wrong, cut to ERROR_CAP characters
    consumer       the consumer or worker that gave up
    failed_at      Unix time, seconds with milliseconds
    source_stream  the stream the payload was read from or meant for ("" when none)
    source_id      the entry id it had there ("" for payloads that never were an entry)

plus optional context fields (host, seq, did) that say where a source found it. `dlq replay`
strips `DLQ_META` and writes back what is left, so a payload keeps its own field names.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

__all__ = ["DLQ_META", "ERROR_CAP", "dead_letter_fields"]

DLQ_META = ("reason", "attempts", "error", "consumer", "failed_at", "source_stream", "source_id")
# An error message longer than this is cut: one pathological exception must not bloat the DLQ.
ERROR_CAP = 4000


def _b(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def dead_letter_fields(
    payload: Mapping[bytes, bytes] | Mapping[str, bytes | str] | Mapping[bytes | str, bytes | str],
    *,
    reason: str,
    error: str,
    consumer: str,
    attempts: int = 1,
    source_stream: str = "",
    source_id: str = "",
    context: Mapping[str, str] | None = None,
) -> dict[bytes, bytes]:
    """The fields of one dead letter: `payload`, then the metadata, then `context`."""
    fields = {_b(k): _b(v) for k, v in payload.items()}
    meta = {
        "reason": reason,
        "attempts": str(attempts),
        "error": error[:ERROR_CAP],
        "consumer": consumer,
        "failed_at": f"{time.time():.3f}",
        "source_stream": source_stream,
        "source_id": source_id,
        **(context or {}),
    }
    fields.update({k.encode(): v.encode() for k, v in meta.items()})
    return fields
