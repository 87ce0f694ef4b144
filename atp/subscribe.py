"""Websocket client for AT Protocol event streams (subscribeRepos, subscribeLabels).

`subscribe` yields raw binary frames; decoding is `atp.frames`' job. An event stream never ends
normally, so any close or network failure raises `UpstreamError` (transient): the caller
reconnects with the last seq it processed as `cursor` and owns the backoff.

Limits against a hostile or broken server: the handshake must finish within `open_timeout_s`;
a frame above `max_frame_bytes` closes the connection (1009, raised as `UpstreamError` with
`error="FrameTooBig"`); at most `MAX_QUEUE` frames are
buffered (memory <= MAX_QUEUE x max_frame_bytes); no compression (no inflate bomb); a server
that stops answering pings within `ping_timeout_s` — for instance one dripping a frame byte by
byte — is dropped (1011). A connection we close is gone within `ping_interval_s` plus the close
timeout even if the server never answers our close frame. Redirects are not followed (relays
and labelers are configured endpoints) and proxies from the environment are not used.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from atp.errors import UpstreamError

__all__ = ["stream_url", "subscribe"]

SUBSCRIBE_REPOS = "com.atproto.sync.subscribeRepos"
SUBSCRIBE_LABELS = "com.atproto.label.subscribeLabels"
# Relay #commit frames carry up to 2 MB of blocks; leave headroom for the envelope.
DEFAULT_MAX_FRAME_BYTES = 5 * 1024 * 1024
# Frames read ahead while the consumer is busy (relays send bursts): the library's default.
MAX_QUEUE = 16


class _NoRedirects(connect):
    """`connect` that treats a redirect answer as a refused handshake."""

    def process_redirect(self, exc: Exception) -> Exception | str:
        return exc


def stream_url(url_or_host: str, nsid: str = SUBSCRIBE_REPOS) -> str:
    """`host` or `http(s)://host` -> `ws(s)://host/xrpc/<nsid>`; a full ws URL is kept."""
    if "://" not in url_or_host:
        url_or_host = f"wss://{url_or_host}"
    parts = urlsplit(url_or_host)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path if "/xrpc/" in parts.path else f"{parts.path.rstrip('/')}/xrpc/{nsid}"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def _with_cursor(url: str, cursor: int | None) -> str:
    if cursor is None:
        return url
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode({"cursor": cursor})) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


async def subscribe(
    url: str,
    *,
    cursor: int | None,
    open_timeout_s: float = 10.0,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ping_interval_s: float = 20.0,
    ping_timeout_s: float = 20.0,
) -> AsyncGenerator[bytes, None]:
    """Yield raw binary frames from the stream at `url` (resuming after `cursor` when given).

    `url` is a ws(s) URL, or an http(s) base URL / bare host meaning its subscribeRepos endpoint.
    """
    target = _with_cursor(stream_url(url), cursor)
    try:
        async with _NoRedirects(
            target,
            open_timeout=open_timeout_s,
            max_size=max_frame_bytes,
            max_queue=MAX_QUEUE,
            compression=None,
            ping_interval=ping_interval_s,
            ping_timeout=ping_timeout_s,
            close_timeout=min(10.0, ping_timeout_s),
            proxy=None,
        ) as ws:
            async for message in ws:
                if isinstance(message, str):
                    continue  # event streams are binary; text frames are not part of the protocol
                yield message
    except ConnectionClosed as exc:
        # Who closed, and why: the server (its code), or we (1009: frame too big, 1011: no pong).
        frame, who = (exc.rcvd, "by the server") if exc.rcvd else (exc.sent, "by us")
        why = f"{frame.code} {frame.reason}".strip() if frame else "no close frame"
        # 1009 sent by us: the next frame is over max_frame_bytes; the caller may skip it.
        ours = exc.sent is not None and not exc.rcvd_then_sent  # we closed first (a server echoes it)
        kind = "FrameTooBig" if ours and exc.sent is not None and exc.sent.code == 1009 else "StreamClosed"
        raise UpstreamError(f"{url}: closed {who} ({why})", error=kind) from exc
    except InvalidStatus as exc:
        status = exc.response.status_code
        raise UpstreamError(
            f"{url}: handshake answered {status}", status=status, error="StreamRejected"
        ) from exc
    except (InvalidHandshake, InvalidURI, OSError, TimeoutError) as exc:
        raise UpstreamError(f"{url}: {type(exc).__name__}: {exc}", error="ConnectionError") from exc
    # A clean end of iteration is still a disconnect for a stream that should never end.
    raise UpstreamError(f"{url}: stream ended", error="StreamClosed")
