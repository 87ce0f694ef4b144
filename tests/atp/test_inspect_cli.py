"""`streamfill inspect` run as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workers.cli", "inspect", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def test_inspect_car_lists_records_in_key_order(atproto_data: Path) -> None:
    car = atproto_data / "car" / "jetstream_corpus_repo.car"
    result = _run("car", str(car))
    assert result.returncode == 0, result.stderr
    expected = car.with_name("jetstream_corpus_repo.expected_records.tsv").read_text()
    assert result.stdout.splitlines() == [line for line in expected.splitlines() if line.strip()]


def test_inspect_car_json(atproto_data: Path) -> None:
    result = _run("car", "--json", str(atproto_data / "car" / "arroba_snarfed2.car"))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 5
    profile = next(line for line in lines if line["collection"] == "app.bsky.actor.profile")
    assert profile["record"]["avatar"]["ref"] == {
        "$link": "bafkreidezhynguld5tluez36gwjshsjvex2moalvti7hv5akihjioez5te"
    }


def test_inspect_bad_car_is_one_line(atproto_data: Path) -> None:
    for name, kind in [("gocar_sample-wrapped-v2.car", "CarVersionError"),
                       ("gocar_sample-corrupt-pragma.car", "CarTruncatedError")]:  # fmt: skip
        result = _run("car", str(atproto_data / "car-bad" / name))
        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert result.stderr.startswith(f"streamfill: invalid CAR: {kind}: ")
    partial = _run("car", str(atproto_data / "car" / "indigo_repo_slice.car"))
    assert partial.returncode == 1 and "MissingBlockError" in partial.stderr


def test_inspect_frames(atproto_data: Path, tmp_path: Path) -> None:
    result = _run("frames", str(atproto_data / "firehose" / "jetstream_relay_frames.bin"))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 150
    assert lines[0]["type"] == "CommitFrame" and lines[0]["seq"] == 31527015322
    assert lines[0]["ops"][0]["path"] == "app.bsky.feed.like/3mptbyplj5d2a"
    bad = tmp_path / "bad.bin"
    bad.write_bytes((10).to_bytes(4, "little") + b"\xff" * 10)
    result = _run("frames", str(bad))
    assert result.returncode == 1 and result.stderr.startswith("streamfill: invalid frames: FrameError: ")
