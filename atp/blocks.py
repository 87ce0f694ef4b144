"""A block store for reading one repo: in memory up to a budget, then spilled to a temporary file.

getRepo emits blocks in no particular order and the MST walk needs random access to all of them,
so a reader must keep every block until the walk is done. Below `memory_bytes` they stay in a dict
(the fast path: `get` is the dict's own); beyond it, block bytes go to an unlinked temporary file
and only their CID, offset and length stay in memory (about 120 bytes per block), so a repo of
several GB is read with a bounded amount of memory.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable

# 256 MiB of block bytes in memory per repo being read: the largest real repos are a few hundred
# MB, most are far below; a backfiller reads `concurrency` repos at once.
DEFAULT_MEMORY_BYTES = 256 * 1024 * 1024


class BlockStore:
    """Blocks by binary CID; `get(cid)` returns the bytes or None."""

    def __init__(self, memory_bytes: int = DEFAULT_MEMORY_BYTES, spill_dir: str | None = None) -> None:
        self._memory: dict[bytes, bytes] = {}
        self._budget = memory_bytes
        self._in_memory = 0
        self._spill_dir = spill_dir
        self._file: int | None = None
        self._end = 0
        self._index: dict[bytes, tuple[int, int]] = {}
        self.get: Callable[[bytes], bytes | None] = self._memory.get

    def update(self, blocks: Iterable[tuple[bytes, bytes]]) -> None:
        """Add blocks (a later block with the same CID has the same bytes: it is ignored)."""
        if self._file is not None:
            self._append(blocks)
            return
        items = blocks if isinstance(blocks, list) else list(blocks)
        self._in_memory += sum([len(data) for _, data in items])
        self._memory.update(items)
        if self._in_memory > self._budget:
            self._spill()

    @property
    def spilled(self) -> bool:
        return self._file is not None

    def __len__(self) -> int:
        return len(self._memory) + len(self._index)

    def __getitem__(self, cid: bytes) -> bytes:
        data = self.get(cid)
        if data is None:
            raise KeyError(cid)
        return data

    def __contains__(self, cid: object) -> bool:
        return cid in self._memory or cid in self._index

    def close(self) -> None:
        """Release the temporary file (also done when the store is garbage collected)."""
        if self._file is not None:
            os.close(self._file)
            self._file = None
        self._index.clear()

    def __del__(self) -> None:
        self.close()

    def _spill(self) -> None:
        fd, path = tempfile.mkstemp(prefix="streamfill-repo-", dir=self._spill_dir)
        os.unlink(path)  # gone from the directory at once; the space is freed when fd closes
        self._file = fd
        memory, self._memory = self._memory, {}
        self._append(memory.items())
        self._in_memory = 0
        self.get = self._get_spilled

    def _append(self, blocks: Iterable[tuple[bytes, bytes]]) -> None:
        assert self._file is not None
        index = self._index
        parts: list[bytes] = []
        offset = self._end
        for cid, data in blocks:
            if cid in index:
                continue
            index[cid] = (offset, len(data))
            parts.append(data)
            offset += len(data)
        if parts:
            _write_all(self._file, b"".join(parts), self._end)
            self._end = offset

    def _get_spilled(self, cid: bytes) -> bytes | None:
        where = self._index.get(cid)
        if where is None or self._file is None:
            return None
        return os.pread(self._file, where[1], where[0])


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
