"""`streamfill inspect`: list the records of a repo CAR, or decode a file of event-stream frames.

    streamfill inspect car FILE [--json]   one line per record, in key order
    streamfill inspect frames FILE         FILE holds [u32 little-endian length][frame] repeated

Invalid input exits with status 1 and one line on stderr, `streamfill: invalid CAR: <Type>: <msg>`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import anyio
import orjson

from atp.cbor import to_json_model
from atp.errors import AtpError, FrameError
from atp.frames import decode_frame
from atp.repo import RepoReader, read_repo

_CHUNK = 64 * 1024


def register(subparsers: Any) -> None:
    """Add the `inspect` command and its `car` / `frames` subcommands."""
    text = "decode a repo CAR or a file of event-stream frames (e.g. dead-lettered ones)"
    parser = subparsers.add_parser("inspect", help=text, description=text)
    sub = parser.add_subparsers(
        dest="inspect_command", metavar="WHAT", title="what", help="the kind of file to decode"
    )
    sub.required = True
    text = "list the records of a repo CAR in key order (the commit signature is not checked)"
    car = sub.add_parser("car", help=text, description=text)
    car.add_argument("file", type=Path, help="a repo CAR file, as com.atproto.sync.getRepo returns it")
    car.add_argument("--json", action="store_true", help="one JSON line per record, with the record")
    car.set_defaults(func=_run_car)
    text = "decode length-prefixed event-stream frames into JSON lines"
    frames = sub.add_parser("frames", help=text, description=text)
    frames.add_argument("file", type=Path, help="[u32 little-endian length][frame], repeated")
    frames.set_defaults(func=_run_frames)


def _fail(kind: str, exc: Exception) -> int:
    """Print the one-line error and return the exit status."""
    message = " ".join(str(exc).split())
    print(f"streamfill: invalid {kind}: {type(exc).__name__}: {message}", file=sys.stderr)
    return 1


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    """Read a file in 64 KiB chunks."""
    async with await anyio.open_file(path, "rb") as f:
        while chunk := await f.read(_CHUNK):
            yield chunk


def _emit_records(reader: RepoReader, as_json: bool) -> None:
    """Write the record lines."""
    out = sys.stdout.buffer
    for rec in reader.iter_records():
        if as_json:
            line = {"collection": rec.collection, "rkey": rec.rkey, "cid": rec.cid,
                    "record": to_json_model(rec.record)}  # fmt: skip
            out.write(orjson.dumps(line) + b"\n")
        else:
            out.write(f"{rec.key}\t{rec.cid}\n".encode())


def _run_car(args: argparse.Namespace) -> int:
    """`inspect car`."""
    try:
        reader = anyio.run(read_repo, _file_chunks(args.file))
        _emit_records(reader, args.json)
    except AtpError as exc:
        return _fail("CAR", exc)
    except OSError as exc:
        return _fail("CAR", exc)
    return 0


def _frame_json(data: bytes) -> bytes:
    """Decode one frame to a JSON line (type name plus fields, in the JSON data model)."""
    frame = decode_frame(data)
    fields = {"type": type(frame).__name__, **asdict(frame)}
    return orjson.dumps(to_json_model(fields))


def _run_frames(args: argparse.Namespace) -> int:
    """`inspect frames`."""
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        return _fail("frames", exc)
    out = sys.stdout.buffer
    offset = 0
    try:
        while offset < len(data):
            if offset + 4 > len(data):
                raise FrameError(f"truncated length prefix at offset {offset}")
            length = int.from_bytes(data[offset : offset + 4], "little")
            frame = data[offset + 4 : offset + 4 + length]
            if len(frame) != length:
                raise FrameError(f"frame at offset {offset} claims {length} bytes, {len(frame)} remain")
            out.write(_frame_json(frame) + b"\n")
            offset += 4 + length
    except AtpError as exc:
        return _fail("frames", exc)
    return 0
