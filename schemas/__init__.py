"""Message contracts: one msgspec Struct (or tagged union) per stream, and the registry.

No I/O and no imports of our own packages: every other layer may import this one.
"""

from schemas._messages import (
    BACKFILL_SEQ,
    Account,
    CaptainsLogDoc,
    CaptainsLogResult,
    FirehoseEvent,
    Identity,
    Label,
    LabelBatch,
    RecordCreate,
    RecordDelete,
    RecordUpdate,
    RepoJob,
    RepoMarker,
)
from schemas._registry import (
    REGISTRY,
    SchemaError,
    StreamContract,
    contract_for,
    decode_entry,
    encode_entry,
)

__all__ = [
    "BACKFILL_SEQ",
    "REGISTRY",
    "Account",
    "CaptainsLogDoc",
    "CaptainsLogResult",
    "FirehoseEvent",
    "Identity",
    "Label",
    "LabelBatch",
    "RecordCreate",
    "RecordDelete",
    "RecordUpdate",
    "RepoJob",
    "RepoMarker",
    "SchemaError",
    "StreamContract",
    "contract_for",
    "decode_entry",
    "encode_entry",
]
