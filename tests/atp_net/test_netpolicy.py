"""The SSRF policy (atp.netpolicy), on and off, against servers on loopback only.

With the policy on, every loopback address stands in for the private hosts a hostile DID
document or redirect would name: refused by literal address, or after DNS resolution
(`localhost`), before any byte is sent to them (the servers count their hits).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import AsyncIterator

import anyio
import anyio.abc
import pytest

from atp.crypto import SigningKey
from atp.did import DidResolver
from atp.errors import DidResolutionError, ForbiddenHost
from atp.http import Deadline, HttpClient
from atp.netpolicy import NetPolicy, address_allowed
from atp.xrpc import XrpcClient
from tests._hostile import GET_REPO, HostileServer, did_document, json_answer, redirect
from tests._support import LOOPBACK, wait_until

pytestmark = pytest.mark.anyio

DID = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.1.2.3", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254",
        "100.64.0.1", "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "192.0.2.1",
        "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "2001:db8::1",
        "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    ],
)  # fmt: skip
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not address_allowed(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_allowed(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "gopher://example.com/",
        "ftp://example.com/x",
        "http://user:secret@example.com/",
        "http:///nohost",
        "http://[::1]:99999/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]/",
        "https://10.1.2.3/xrpc/com.atproto.sync.getRepo",
    ],
)
def test_urls_refused_without_connecting(url: str) -> None:
    with pytest.raises(ForbiddenHost) as info:
        NetPolicy().parse(url)
    assert info.value.permanent


def test_trusted_origins_and_allow_private() -> None:
    policy = NetPolicy().trusting(["http://127.0.0.1:2470", "plc.internal", ""])
    assert policy.parse("http://127.0.0.1:2470/xrpc/x").port == 2470
    assert policy.trusts("plc.internal", 443) and not policy.trusts("plc.internal", 80)
    with pytest.raises(ForbiddenHost):
        policy.parse("http://127.0.0.1:2471/")  # another port is another origin
    assert NetPolicy(allow_private=True).parse("http://127.0.0.1:9/").host == "127.0.0.1"


@pytest.fixture
async def two() -> AsyncIterator[tuple[HostileServer, HostileServer]]:
    async with HostileServer() as first, HostileServer() as second:
        yield first, second


async def _get(http: HttpClient, url: str) -> int:
    reply, _ = await http.get(url, max_bytes=1024, deadline=Deadline.after(5))
    return reply.status


async def test_policy_on_refuses_loopback_by_address_and_by_name(
    two: tuple[HostileServer, HostileServer],
) -> None:
    server, _ = two
    server.on("/x", json_answer({}))
    port = server.base.rsplit(":", 1)[1]
    async with HttpClient(NetPolicy()) as http:
        with pytest.raises(ForbiddenHost):
            await _get(http, server.url("/x"))
        # A name is judged by what it resolves to, when connecting: localhost -> 127.0.0.1.
        with pytest.raises(ForbiddenHost) as info:
            await _get(http, f"http://localhost:{port}/x")
        assert "resolves to" in str(info.value)
    assert server.hits["/x"] == 0
    async with HttpClient(NetPolicy(allow_private=True)) as http:
        assert await _get(http, f"http://localhost:{port}/x") == 200
    assert server.hits["/x"] == 1


async def test_redirects_to_private_hosts_are_refused(two: tuple[HostileServer, HostileServer]) -> None:
    relay, internal = two
    internal.on(GET_REPO, json_answer({"secret": True}))
    internal_port = internal.base.rsplit(":", 1)[1]
    targets = [
        internal.url(GET_REPO),  # a literal loopback address on another port
        f"http://localhost:{internal_port}{GET_REPO}",  # a name resolving to loopback
        "http://169.254.169.254/latest/meta-data/",
        "file:///etc/passwd",
    ]
    # The relay is configured (trusted); where it redirects to is not.
    policy = NetPolicy().trusting([relay.base])
    async with XrpcClient(policy=policy) as xrpc:
        for target in targets:
            relay.on(GET_REPO, redirect(target))
            started = time.monotonic()
            with pytest.raises(ForbiddenHost):
                async with xrpc.get_repo(relay.base, DID, max_bytes=1024, timeout_s=5):
                    pass
            assert time.monotonic() - started < 2  # refused, not timed out
    assert internal.hits[GET_REPO] == 0
    async with XrpcClient(policy=LOOPBACK) as xrpc:  # the policy off: followed
        relay.on(GET_REPO, redirect(internal.url(GET_REPO)))
        async with xrpc.get_repo(relay.base, DID, max_bytes=1024, timeout_s=5) as chunks:
            assert b"secret" in b"".join([c async for c in chunks])
    assert internal.hits[GET_REPO] == 1


async def test_pds_endpoints_from_did_documents_are_checked(two: tuple[HostileServer, HostileServer]) -> None:
    plc, pds = two
    key = SigningKey.generate("secp256k1", seed=b"ssrf")
    plc.on(f"/{DID}", json_answer(did_document(DID, pds.base, key)))
    async with DidResolver(plc_url=plc.base) as resolver:  # the configured directory is trusted
        endpoint = (await resolver.resolve(DID)).pds_endpoint
    async with XrpcClient(policy=NetPolicy().trusting([plc.base])) as xrpc:
        with pytest.raises(ForbiddenHost):
            async with xrpc.get_repo(endpoint, DID, max_bytes=1024, timeout_s=5):
                pass
    assert pds.hits[GET_REPO] == 0
    plc.on(f"/{DID}", json_answer(did_document(DID, "file:///etc/passwd", key)))
    async with DidResolver(plc_url=plc.base) as resolver:
        with pytest.raises(DidResolutionError) as info:
            await resolver.resolve(DID)
    assert info.value.permanent and "not http(s)" in str(info.value)


async def test_did_web_hosts_and_ports(two: tuple[HostileServer, HostileServer]) -> None:
    server, _ = two
    port = server.base.rsplit(":", 1)[1]
    did = f"did:web:localhost%3A{port}"
    key = SigningKey.generate("secp256k1", seed=b"web")
    server.on("/.well-known/did.json", json_answer(did_document(did, "https://pds.example.com", key)))
    async with DidResolver(web_scheme="http") as resolver:
        # A port is refused outright with the policy on; the name is refused by its address.
        with pytest.raises(DidResolutionError) as info:
            await resolver.resolve(did)
        assert info.value.permanent and "port" in str(info.value)
        with pytest.raises(DidResolutionError) as info:
            await resolver.resolve("did:web:localhost")
        assert info.value.permanent and "ForbiddenHost" in str(info.value)
    assert server.hits["/.well-known/did.json"] == 0
    async with DidResolver(web_scheme="http", policy=LOOPBACK) as resolver:
        assert (await resolver.resolve(did)).pds_endpoint == "https://pds.example.com"
    assert server.hits["/.well-known/did.json"] == 1


async def test_guarded_streams_say_when_the_peer_has_closed() -> None:
    """The pool drops a kept-alive connection whose socket reads at once (the peer closed it):
    `GuardedBackend`'s streams answer that from the socket they looked up at connect time."""
    from atp.netpolicy import GuardedBackend

    closed = anyio.Event()
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")

    async def serve(client: anyio.abc.SocketStream) -> None:
        async with client:
            assert await client.receive() == b"ping"
            await client.send(b"pong")
            await closed.wait()

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        stream = await GuardedBackend(NetPolicy(allow_private=True)).connect_tcp("127.0.0.1", port, timeout=5)
        assert stream.get_extra_info("socket").getpeername()[1] == port
        assert stream.get_extra_info("server_addr")[1] == port  # the rest from httpcore's stream
        await stream.write(b"ping", timeout=5)
        assert await stream.read(10, timeout=5) == b"pong"
        assert stream.get_extra_info("is_readable") is False  # idle, open
        closed.set()  # the server closes its end
        await wait_until(lambda: stream.get_extra_info("is_readable"), what="the close seen")
        assert await stream.read(10, timeout=5) == b""
        await stream.aclose()
        assert stream.get_extra_info("is_readable") is True  # no socket left: as httpcore says
        tg.cancel_scope.cancel()
