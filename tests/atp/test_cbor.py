"""DAG-CBOR and the JSON data model against the IPLD codec fixtures and the atproto data-model vectors."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from atp import cbor
from atp.errors import CborError


def _dag_json(obj: Any) -> Any:
    """DAG-JSON ({"/": cid}, {"/": {"bytes": b64}}) -> atproto JSON model."""
    if isinstance(obj, dict):
        if set(obj) == {"/"}:
            inner = obj["/"]
            return {"$link": inner} if isinstance(inner, str) else {"$bytes": inner["bytes"]}
        return {k: _dag_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_dag_json(v) for v in obj]
    return obj


def test_ipld_codec_fixtures(atproto_data: Path) -> None:
    folder = atproto_data / "dag-cbor" / "ipld-codec-fixtures"
    checked = 0
    for path in sorted(folder.glob("*.dag-cbor")):
        name, cid = path.stem.rsplit("__", 1)
        data = path.read_bytes()
        obj = cbor.decode(data)
        assert cbor.cid_for(data) == cid, name
        assert cbor.encode(obj) == data, name
        json_files = list(folder.glob(f"{name.replace('[', '?')}__bag*.dag-json"))
        if len(json_files) == 1:
            assert cbor.to_json_model(obj) == _dag_json(json.loads(json_files[0].read_text())), name
            checked += 1
    assert checked > 50


def test_data_model_fixtures(atproto_data: Path) -> None:
    for case in json.loads((atproto_data / "interop/data-model/data-model-fixtures.json").read_text()):
        raw = base64.b64decode(case["cbor_base64"] + "=" * (-len(case["cbor_base64"]) % 4))
        obj = cbor.decode(raw)
        assert cbor.to_json_model(obj) == case["json"]
        assert cbor.encode(cbor.from_json_model(case["json"])) == raw
        assert cbor.cid_for(raw) == case["cid"]


def test_links_and_bytes_stay_distinct() -> None:
    link = cbor.CID.from_str(cbor.cid_for(b"x"))
    cid_shaped_bytes = bytes(link)  # a byte string that happens to look like a CID
    data = cbor.encode({"l": link, "b": {"n": 1, "raw": b"\x00\x01"}})
    obj = cbor.decode(data)
    assert type(obj["l"]) is cbor.CID and type(obj["b"]["raw"]) is bytes
    assert cbor.to_json_model(obj) == {"l": {"$link": str(link)}, "b": {"n": 1, "raw": {"$bytes": "AAE"}}}
    assert cbor.to_json_bytes({"x": b"\xff"}) == b'{"x":{"$bytes":"/w"}}'
    assert bytes(cbor.CID.from_str(str(link))) == cid_shaped_bytes


@pytest.mark.parametrize("data", [b"", b"\xff", b"\xa1\x01\x02", b"\x82\x01", b"\x01\x02"])
def test_invalid_cbor(data: bytes) -> None:
    with pytest.raises(CborError):
        cbor.decode(data)


def test_real_records(atproto_data: Path) -> None:
    for name in ("indigo_feedpost_record.cbor", "indigo_post_richtext_link.cbor"):
        record = cbor.decode((atproto_data / "dag-cbor" / name).read_bytes())
        assert record["$type"] == "app.bsky.feed.post"
        assert json.loads(cbor.to_json_bytes(record))["text"] == record["text"]
