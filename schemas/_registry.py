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


def contract_for(name: str) -> StreamContract:
    """The contract of the stream named `name`: a registry name (`firehose_live`), never a key.

    Whoever wires a handler knows which stream it serves, and hands it that stream's contract
    (or the handler holds the contract of what it reads and writes); nothing here parses keys.
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise SchemaError(f"no contract registered for stream {name!r}") from None


def encode_entry(stream: str, message: Any) -> dict[bytes, bytes]:
    return _contract_of(stream).encode(message)


def decode_entry(stream: str, fields: Mapping[bytes, bytes]) -> Any:
    return _contract_of(stream).decode(fields)


def _contract_of(stream: str) -> StreamContract:
    # TODO(lead): after src merge: the last callers that pass a key (`test42:captains_log`)
    # rather than a name are workers/replayer/scan.py, workers/replayer/fold.py and
    # workers/ingester/listing.py; once they hold their contracts, this becomes contract_for.
    return contract_for(stream if stream in REGISTRY else stream.rsplit(":", 1)[-1])
