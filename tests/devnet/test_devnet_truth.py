"""Ground truth equals what the servers serve; truth file, stats and CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest

from atp.errors import RepoDeactivated, RepoNotFound, RepoTakendown
from atp.netpolicy import NetPolicy
from atp.repo import read_repo
from atp.xrpc import XrpcClient
from devnet import Devnet, FaultConfig
from tests._support import wait_until
from tests.devnet.conftest import DevnetFactory

pytestmark = pytest.mark.anyio

_ERRORS = {"takendown": RepoTakendown, "deactivated": RepoDeactivated, "deleted": RepoNotFound}


async def _served_records(xrpc: XrpcClient, net: Devnet, did: str) -> tuple[str, dict[str, str]]:
    async with xrpc.get_repo(net.relay_url, did, max_bytes=10**8, timeout_s=10) as chunks:
        repo = await read_repo(chunks, did=did, signing_key=net.world.by_did[did].key.public_key)
    return repo.commit.rev or "", dict(repo.iter_keys())


async def test_truth_matches_get_repo_after_live_activity(devnet_factory: DevnetFactory) -> None:
    net: Devnet = await devnet_factory(
        repos=40, firehose_rate=400, faults=FaultConfig(takendown=1, missing=1)
    )
    await wait_until(lambda: net.world.firehose.last_seq >= 150, what="live activity")
    net.pause_activity()
    truth = net.truth()
    repos = {t["did"]: t for t in truth if t["type"] == "repo"}
    records: dict[str, dict[str, str]] = {}
    for t in truth:
        if t["type"] == "record":
            records.setdefault(t["did"], {})[f"{t['collection']}/{t['rkey']}"] = t["cid"]
            assert len(t["rev"]) == 13 and t["rev"] <= repos[t["did"]]["rev"]
    async with XrpcClient(policy=NetPolicy(allow_private=True)) as xrpc:  # the devnet is on loopback
        for did, repo in repos.items():
            if repo["status"] != "active":
                with pytest.raises(_ERRORS[repo["status"]]):
                    await _served_records(xrpc, net, did)
                continue
            rev, served = await _served_records(xrpc, net, did)
            assert rev == repo["rev"] and served == records.get(did, {}), did
    assert {r["status"] for r in repos.values()} >= {"active", "takendown", "deleted"}


async def test_truth_endpoints_and_stats(devnet_factory: DevnetFactory, tmp_path: Path) -> None:
    net: Devnet = await devnet_factory(repos=15, truth_path=str(tmp_path / "truth.jsonl"))
    net.step(30)
    async with httpx.AsyncClient(base_url=net.relay_url) as client:
        served = [json.loads(line) for line in (await client.get("/truth")).text.splitlines()]
        written = (await client.post("/truth/write")).json()
        stats = (await client.get("/stats")).json()
        bad_limit = await client.get("/xrpc/com.atproto.sync.listRepos", params={"limit": "5000"})
    assert served == net.truth()
    assert [json.loads(x) for x in (await anyio.Path(written["path"]).read_text()).splitlines()] == served
    assert written["lines"] == len(served)
    assert stats["repos"] == 15 and stats["firehose_seq"] + stats["labels_seq"] >= 30
    assert bad_limit.status_code == 400 and bad_limit.json()["error"] == "InvalidRequest"


async def test_takedown_hides_records_from_truth(devnet_factory: DevnetFactory) -> None:
    net: Devnet = await devnet_factory(repos=10)
    did = next(a.did for a in net.world.accounts if a.records)
    net.set_status(did, "takendown")
    truth = net.truth()
    assert not [t for t in truth if t["type"] == "record" and t["did"] == did]
    assert {"type": "repo", "did": did, "rev": net.world.by_did[did].rev, "status": "takendown"} in truth


async def _listed(net: Devnet, pds: int, did: str) -> list[dict[str, object]]:
    async with httpx.AsyncClient(base_url=net.pds_urls[pds]) as client:
        repos = (await client.get("/xrpc/com.atproto.sync.listRepos", params={"limit": "1000"})).json()
    return [r for r in repos["repos"] if r["did"] == did]


async def test_a_host_the_account_left_lists_it_deactivated_at_the_rev_it_left_with(
    devnet_factory: DevnetFactory,
) -> None:
    net: Devnet = await devnet_factory(repos=10)
    account = next(a for a in net.world.accounts if a.active and a.pds == 0)
    rev, head = account.rev, account.head
    net.move(account.did, 1)
    left = {"did": account.did, "head": head, "rev": rev, "active": False, "status": "deactivated"}
    assert await _listed(net, 0, account.did) == [left]
    assert await _listed(net, 1, account.did) == [
        {"did": account.did, "head": head, "rev": rev, "active": True}
    ]
    assert {"type": "repo", "did": account.did, "rev": rev, "status": "active"} in net.truth()
    net.move(account.did, 0)  # back: PDS 0 serves it again, PDS 1 keeps it deactivated
    assert await _listed(net, 0, account.did) == [
        {"did": account.did, "head": head, "rev": rev, "active": True}
    ]
    assert await _listed(net, 1, account.did) == [left]


async def _first_line(proc: anyio.abc.Process) -> str:
    assert proc.stdout is not None
    buf = b""
    while b"\n" not in buf:
        buf += await proc.stdout.receive()
    return buf.split(b"\n", 1)[0].decode()


async def test_cli_prints_urls_writes_truth_on_sigusr1_and_stops_on_sigterm(tmp_path: Path) -> None:
    truth = anyio.Path(tmp_path / "truth.jsonl")
    cmd = [sys.executable, "-m", "workers.cli", "devnet", "--repos", "12", "--seed", "3"]
    cmd += ["--firehose-rate", "20", "--truth", str(truth)]
    async with await anyio.open_process(
        cmd, stderr=subprocess.DEVNULL, cwd=Path(__file__).parents[2]
    ) as proc:
        try:
            with anyio.fail_after(20):
                info = json.loads(await _first_line(proc))
            async with httpx.AsyncClient() as client:
                assert (await client.get(info["relay"] + "/stats")).json()["repos"] == 12
            proc.send_signal(signal.SIGUSR1)
            await wait_until(truth.exists, what="truth file")
            lines = (await truth.read_text()).splitlines()
            assert any(json.loads(line)["type"] == "record" for line in lines)
            proc.send_signal(signal.SIGTERM)
            with anyio.fail_after(10):
                assert await proc.wait() == 0
        finally:
            if proc.returncode is None:
                proc.kill()
