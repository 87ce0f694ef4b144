"""Stream name -> (entry field, message type), with one encoder and decoder per contract."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

import msgspec

from schemas._messages import CaptainsLogDoc, CaptainsLogResult, FirehoseEvent, LabelBatch, RepoJob


class SchemaError(ValueError):
    """An entry does not match its stream's contract (permanent: dead-letter it)."""


@dataclass(frozen=True)
class StreamContract:
    """How entries of one stream are laid out: one field holding one JSON-encoded message."""

    field: str
    type: Any
    _decoder: msgspec.json.Decoder[Any] = dataclass_field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_decoder", msgspec.json.Decoder(self.type))

    def encode(self, message: Any) -> dict[bytes, bytes]:
        return {self.field.encode(): _ENCODER.encode(message)}

    def decode(self, fields: Mapping[bytes, bytes]) -> Any:
        raw = fields.get(self.field.encode())
        if raw is None:
            raise SchemaError(f"entry has no {self.field!r} field (fields: {sorted(fields)!r})")
        try:
            return self._decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise SchemaError(f"invalid {self.field!r}: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise SchemaError(f"malformed JSON in {self.field!r}: {exc}") from exc


_ENCODER = msgspec.json.Encoder()

REGISTRY: dict[str, StreamContract] = {
    "repo_backfill": StreamContract("repo", RepoJob),
    "firehose_live": StreamContract("event", FirehoseEvent),
    "firehose_backfill": StreamContract("event", FirehoseEvent),
    "label_live": StreamContract("labels", LabelBatch),
    "captains_log": StreamContract("doc", CaptainsLogDoc),
    "captains_log_results": StreamContract("result", CaptainsLogResult),
}


def contract_for(stream: str) -> StreamContract:
    """The contract of a stream; streams may carry a prefix (`test42:firehose_live`)."""
    base = stream.rsplit(":", 1)[-1] if stream not in REGISTRY else stream
    try:
        return REGISTRY[base]
    except KeyError:
        raise SchemaError(f"no contract registered for stream {stream!r}") from None


def encode_entry(stream: str, message: Any) -> dict[bytes, bytes]:
    return contract_for(stream).encode(message)


def decode_entry(stream: str, fields: Mapping[bytes, bytes]) -> Any:
    return contract_for(stream).decode(fields)
