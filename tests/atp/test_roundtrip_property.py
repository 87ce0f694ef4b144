"""Property: any record set survives build_repo -> CAR bytes -> streaming read_repo unchanged."""

from __future__ import annotations

from typing import Any

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atp.cbor import CID, cid_for
from atp.crypto import SigningKey
from atp.repo import build_repo, read_repo

KEY = SigningKey.generate(seed=b"property")
_collections = st.sampled_from(["app.bsky.feed.post", "app.bsky.feed.like", "com.example.x", "a.b.c"])
_rkeys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz234567-_~.:", min_size=1, max_size=20).filter(
    lambda s: s not in (".", "..")
)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text(max_size=30)
    | st.binary(max_size=40)
    | st.builds(lambda b: CID.from_str(cid_for(b)), st.binary(max_size=8))
)
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=8), inner, max_size=4), max_leaves=12)  # fmt: skip
_records = st.dictionaries(
    st.tuples(_collections, _rkeys).map("/".join),
    st.dictionaries(st.text(max_size=8), _values, max_size=5),
    max_size=60,
)


async def _chunks(data: bytes, size: int) -> Any:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def _read_back(car: bytes, size: int) -> tuple[str, dict[str, tuple[str, Any]]]:
    reader = await read_repo(_chunks(car, size), did="did:plc:prop", signing_key=KEY.public_key)
    return reader.commit.data, {rec.key: (rec.cid, rec.record) async for rec in reader.records()}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=_records, size=st.integers(min_value=1, max_value=4096))
def test_build_then_read_round_trips(records: dict[str, dict[str, Any]], size: int) -> None:
    built = build_repo("did:plc:prop", records.items(), rev="3kaaaaaaaaaa2", signing_key=KEY)
    root, got = anyio.run(_read_back, built.car, size)
    assert root == built.root
    assert got == {key: (built.record_cids[key], record) for key, record in records.items()}
    assert list(got) == sorted(records)
