"""The AT Protocol error tree: every failure of `atp` is one of these, classified by `permanent`.

```
AtpError                              permanent
 ├── CarError                         True   (malformed CAR; subclasses say how)
 │    ├── CarVersionError             True   (CARv2 or another version)
 │    ├── CarHeaderError              True   (header is not {version: 1, roots: [CID, ...]})
 │    ├── CarTruncatedError           True   (input ended inside a varint, header or section)
 │    ├── CarZeroLengthSectionError   True   (a section of length 0)
 │    ├── CarBlockMismatchError       True   (block bytes do not hash to their CID)
 │    ├── CarUnsupportedCidError      True   (not CIDv1 / sha2-256 / dag-cbor|raw)
 │    ├── MissingBlockError           True   (a referenced block is absent)
 │    └── CarTooLargeError            True   (input exceeds max_bytes)
 ├── CborError                        True   (bytes are not valid DAG-CBOR)
 ├── CommitError                      True   (commit malformed, for another DID, or not following prevData)
 ├── MstError                         True   (MST malformed or not a tree of the repo spec: atp.mstwalk)
 ├── SignatureError                   True   (signature invalid or malformed)
 ├── DidKeyError                      True   (did:key / multibase key malformed)
 ├── FrameError                       True   (event-stream frame malformed)
 ├── InvalidSyntax                    True   (identifier syntax; subclasses name the kind)
 │    ├── InvalidDid, InvalidHandle, InvalidNsid, InvalidRecordKey,
 │    └── InvalidTid, InvalidAtUri, InvalidCid
 ├── XrpcError                        False  (status, error, message from the server)
 │    ├── RepoNotFound                True
 │    ├── RepoTakendown               True
 │    ├── RepoDeactivated             True
 │    ├── RepoSuspended               True
 │    ├── RequestRejected             True   (any other 4xx but 408 and 429: will not succeed as sent)
 │    ├── ResponseRejected            True   (a hostile or broken answer: body above its cap, a content
 │    │    │                                   coding we did not ask for, too many redirects)
 │    │    └── RepoTooLarge           True   (a getRepo body above the configured cap)
 │    ├── ForbiddenHost               True   (the network policy refused the URL or its addresses)
 │    ├── RateLimited                 False  (retry_after_s)
 │    └── UpstreamError               False  (5xx, 408, timeouts, connection errors, broken bodies)
 └── DidResolutionError               per instance (not found: True, network: False)
```

`permanent=True` means bad input: dead-letter at once. `permanent=False` means transient: retry.
"""

from __future__ import annotations

__all__ = [
    "AtpError",
    "CarBlockMismatchError",
    "CarError",
    "CarHeaderError",
    "CarTooLargeError",
    "CarTruncatedError",
    "CarUnsupportedCidError",
    "CarVersionError",
    "CarZeroLengthSectionError",
    "CborError",
    "CommitError",
    "DidKeyError",
    "DidResolutionError",
    "ForbiddenHost",
    "FrameError",
    "InvalidAtUri",
    "InvalidCid",
    "InvalidDid",
    "InvalidHandle",
    "InvalidNsid",
    "InvalidRecordKey",
    "InvalidSyntax",
    "InvalidTid",
    "MissingBlockError",
    "MstError",
    "RateLimited",
    "RepoDeactivated",
    "RepoNotFound",
    "RepoSuspended",
    "RepoTakendown",
    "RepoTooLarge",
    "RequestRejected",
    "ResponseRejected",
    "SignatureError",
    "UpstreamError",
    "XrpcError",
]


class AtpError(Exception):
    """Base of every AT Protocol error raised by `atp`."""

    permanent: bool = True


class CarError(AtpError):
    """The CAR file is malformed or not an atproto CAR."""


class CarVersionError(CarError):
    """The CAR is not version 1 (e.g. a CARv2 wrapper)."""


class CarHeaderError(CarError):
    """The CAR header is not a DAG-CBOR map {version: 1, roots: [CID, ...]}."""


class CarTruncatedError(CarError):
    """The input ended in the middle of a varint, header or section."""


class CarZeroLengthSectionError(CarError):
    """A section declared a length of zero."""


class CarBlockMismatchError(CarError):
    """A block's bytes do not hash to its CID."""


class CarUnsupportedCidError(CarError):
    """A CID is not CIDv1 with sha2-256 and a dag-cbor or raw codec."""


class MissingBlockError(CarError):
    """A block referenced by the commit, the MST or an op is absent."""

    def __init__(self, message: str, cid: str | None = None) -> None:
        super().__init__(message)
        self.cid = cid


class CarTooLargeError(CarError):
    """The CAR exceeds the configured size limit."""


class CborError(AtpError):
    """Bytes are not valid DAG-CBOR, or an object cannot be encoded."""


class CommitError(AtpError):
    """A repo commit is malformed, belongs to another DID, or does not follow from its prevData."""


class MstError(AtpError):
    """An MST is malformed or not a tree of the repository spec (order, layers, shape, size)."""


class SignatureError(AtpError):
    """A signature is malformed or does not verify."""


class DidKeyError(AtpError):
    """A did:key or multibase public key is malformed or of an unsupported type."""


class FrameError(AtpError):
    """An event-stream frame is malformed."""


class InvalidSyntax(AtpError, ValueError):
    """An identifier does not match its AT Protocol syntax."""


class InvalidDid(InvalidSyntax):
    """Invalid DID syntax."""


class InvalidHandle(InvalidSyntax):
    """Invalid handle syntax."""


class InvalidNsid(InvalidSyntax):
    """Invalid NSID syntax."""


class InvalidRecordKey(InvalidSyntax):
    """Invalid record key syntax."""


class InvalidTid(InvalidSyntax):
    """Invalid TID syntax."""


class InvalidAtUri(InvalidSyntax):
    """Invalid AT URI syntax."""


class InvalidCid(InvalidSyntax):
    """Invalid CID string syntax."""


class XrpcError(AtpError):
    """An XRPC call failed; `status` and `error` come from the HTTP response when there was one."""

    permanent = False

    def __init__(self, message: str = "", *, status: int | None = None, error: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message

    def __str__(self) -> str:
        parts = [p for p in (str(self.status) if self.status is not None else None, self.error) if p]
        prefix = " ".join(parts)
        return f"{prefix}: {self.message}" if prefix else self.message


class RepoNotFound(XrpcError):
    """The host does not have this repo."""

    permanent = True


class RepoTakendown(XrpcError):
    """The repo was taken down."""

    permanent = True


class RepoDeactivated(XrpcError):
    """The account is deactivated."""

    permanent = True


class RepoSuspended(XrpcError):
    """The account is suspended."""

    permanent = True


class RequestRejected(XrpcError):
    """The server refused the request itself (a 4xx other than 404, 408 and 429): retrying won't help."""

    permanent = True


class ResponseRejected(XrpcError):
    """We refuse the answer: a body above its cap, an unrequested content coding, too many redirects."""

    permanent = True


class RepoTooLarge(ResponseRejected):
    """The repo exceeds the configured size limit."""


class ForbiddenHost(XrpcError):
    """The network policy refused the URL (scheme) or the addresses its host resolves to."""

    permanent = True


class RateLimited(XrpcError):
    """The server rate-limited us; retry after `retry_after_s` when known."""

    permanent = False

    def __init__(
        self,
        message: str = "",
        *,
        status: int | None = 429,
        error: str | None = "RateLimitExceeded",
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, status=status, error=error)
        self.retry_after_s = retry_after_s


class UpstreamError(XrpcError):
    """The server or the network failed (5xx, timeout, connection error)."""

    permanent = False


class DidResolutionError(AtpError):
    """A DID could not be resolved; not-found is permanent, a network failure is transient."""

    def __init__(self, message: str, *, permanent: bool = True) -> None:
        super().__init__(message)
        self.permanent = permanent
