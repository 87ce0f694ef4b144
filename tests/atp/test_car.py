"""CAR framing on real files: valid repos, every corrupt file in car-bad/, the generic CAR, the writer."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import libipld
import pytest

from atp.car import Block, CarReader, read_car, read_car_bytes, write_car
from atp.cbor import cid_for
from atp.errors import (
    CarBlockMismatchError,
    CarError,
    CarHeaderError,
    CarTooLargeError,
    CarTruncatedError,
    CarUnsupportedCidError,
    CarVersionError,
    CarZeroLengthSectionError,
)


async def _source(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def _all_blocks(
    data: bytes, *, size: int = 65536, verify: bool = True
) -> tuple[CarReader, list[Block]]:
    reader = await read_car(_source(data, size), verify=verify)
    blocks = [b async for batch in reader.batches() for b in batch]
    return reader, blocks


def _b64(s: str) -> bytes:
    return base64.b64decode(s + "=" * (-len(s) % 4))


@pytest.mark.anyio
@pytest.mark.parametrize("size", [1, 7, 65536])
async def test_valid_cars_match_libipld(atproto_data: Path, size: int) -> None:
    for path in sorted((atproto_data / "car").glob("*.car")):
        data = path.read_bytes()
        reader, blocks = await _all_blocks(data, size=size)
        header, expected = libipld.decode_car(data)
        assert reader.header.roots == [libipld.encode_cid(r) for r in header["roots"]], path.name
        assert {cid for cid, _ in blocks} == set(expected), path.name
        assert all(cid_for(block) == libipld.encode_cid(cid) for cid, block in blocks)


# Strict atproto mode: the first problem met. Framing-only mode: the framing problem itself.
BAD = {
    "gocar_badheaderlength.car": (CarHeaderError, CarHeaderError),
    "gocar_badsectionlength.car": (CarHeaderError, CarTooLargeError),
    "gocar_sample-corrupt-pragma.car": (CarTruncatedError, CarTruncatedError),
    "gocar_sample-rootless-v42.car": (CarVersionError, CarVersionError),
    "gocar_sample-v1-tailing-corrupt-section.car": (CarUnsupportedCidError, CarTruncatedError),
    "gocar_sample-v1-with-zero-len-section.car": (CarUnsupportedCidError, CarZeroLengthSectionError),
    "gocar_sample-v1-with-zero-len-section2.car": (CarUnsupportedCidError, CarZeroLengthSectionError),
    "gocar_sample-wrapped-v2.car": (CarVersionError, CarVersionError),
    "indigo_divy_pr1112_utf8_mangled.car": (CarHeaderError, CarHeaderError),
}


def test_every_bad_file_is_listed(atproto_data: Path) -> None:
    names = {p.name for p in (atproto_data / "car-bad").iterdir() if p.suffix == ".car"}
    assert names == set(BAD)


@pytest.mark.anyio
@pytest.mark.parametrize("name", sorted(BAD))
@pytest.mark.parametrize("verify", [True, False])
async def test_bad_cars_are_refused_specifically(atproto_data: Path, name: str, verify: bool) -> None:
    expected = BAD[name][0 if verify else 1]
    with pytest.raises(expected) as info:
        await _all_blocks((atproto_data / "car-bad" / name).read_bytes(), verify=verify)
    assert type(info.value) is expected
    assert info.value.permanent
    with pytest.raises(expected):
        read_car_bytes((atproto_data / "car-bad" / name).read_bytes(), verify=verify)


@pytest.mark.anyio
async def test_zero_length_section_offset(atproto_data: Path) -> None:
    data = (atproto_data / "car-bad" / "gocar_sample-v1-with-zero-len-section.car").read_bytes()
    with pytest.raises(CarZeroLengthSectionError, match="offset 479907"):
        await _all_blocks(data, verify=False)


@pytest.mark.anyio
async def test_generic_car_refused_strict_framed_loose(atproto_data: Path) -> None:
    data = (atproto_data / "car-generic" / "gocar_sample-v1.car").read_bytes()
    with pytest.raises(CarUnsupportedCidError):
        await _all_blocks(data)
    _, blocks = await _all_blocks(data, verify=False)
    assert len(blocks) == 1049


@pytest.mark.anyio
async def test_tampered_byte_is_detected(atproto_data: Path) -> None:
    data = bytearray((atproto_data / "car" / "repostream_tiny.car").read_bytes())
    data[-5] ^= 0x01
    with pytest.raises(CarBlockMismatchError):
        await _all_blocks(bytes(data))


@pytest.mark.anyio
async def test_max_bytes(atproto_data: Path) -> None:
    data = (atproto_data / "car" / "repostream_little.car").read_bytes()
    with pytest.raises(CarTooLargeError):
        reader = await read_car(_source(data, 4096), max_bytes=100_000)
        async for _ in reader.batches():
            pass


def test_truncated_everywhere_is_car_error(atproto_data: Path) -> None:
    data = (atproto_data / "car" / "atcute_test_repo.car").read_bytes()
    for cut in range(1, len(data), 37):
        with pytest.raises(CarError):
            read_car_bytes(data[:cut])


def test_official_writer_vectors(atproto_data: Path) -> None:
    for case in json.loads((atproto_data / "car" / "atproto_car-file-fixtures.json").read_text()):
        blocks = [(b["cid"], _b64(b["bytes"])) for b in case["blocks"]]
        car = write_car([case["root"]], blocks)
        assert car == _b64(case["car"])
        header, read = read_car_bytes(car)
        assert header.roots == [case["root"]]
        assert read == dict(blocks)
