"""A block store for reading one repo: in memory up to a budget, then in a temporary SQLite file.

getRepo emits blocks in no particular order and the MST walk needs random access to all of them,
so a reader must keep every block until the walk is done. The budget counts everything a block
costs in memory, not just its bytes: the CID key, the bytes object's header, the dict slot
(`BLOCK_OVERHEAD` per block, measured). Below the budget blocks stay in a dict (the fast path:
`get` is the dict's own); beyond it, further blocks go to an unlinked temporary SQLite database
whose page cache is bounded (`SPILL_CACHE_BYTES`), so keys and indexes of spilled blocks live on
disk too. A repo of several GB, or a CAR of millions of tiny blocks, is read in bounded memory:
at most the budget plus the cache, whatever its size or shape.

Spilled blocks are appended as they come (cheap: no index to keep in order); `seal()` then builds
the CID index in one sort, before the first lookup. It is one long call into SQLite, which lets
go of the GIL: `atp.repo` runs it in a worker thread so that the event loop keeps turning.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import cast

# 256 MiB per repo being read: the largest real repos are a few hundred MB, most far below; a
# backfiller reads `concurrency` repos at once.
DEFAULT_MEMORY_BYTES = 256 * 1024 * 1024
# What a block costs in memory beyond its bytes, counted against the budget: a 36-byte CID key
# (72 B with its object header), the data's bytes header (33 B, rounded up), the dict's entry and
# index slots at their fill factor. Measured (tracemalloc, tests/atp/test_blocks.py) at 98-162 B
# per block, the peak while the dict grows; counted generously so the budget is an upper bound.
BLOCK_OVERHEAD = 192
# SQLite's page cache for spilled blocks: the only memory they use (pages beyond it are read back
# from the file, which the OS caches outside this process).
SPILL_CACHE_BYTES = 4 * 1024 * 1024

Lookup = Callable[[bytes], "bytes | None"]


class _Spill:
    """Blocks in an unlinked SQLite file: appended unindexed, indexed once by `seal`."""

    def __init__(self, spill_dir: str | None) -> None:
        fd, path = tempfile.mkstemp(prefix="streamfill-repo-", suffix=".sqlite", dir=spill_dir)
        os.close(fd)
        # check_same_thread=False: `seal` runs in a worker thread; one thread at a time uses it.
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        os.unlink(path)  # gone from the directory at once; the space is freed when the connection closes
        for pragma in (
            "journal_mode=OFF",  # a scratch file: no rollback, no durability needed
            "synchronous=OFF",
            "locking_mode=EXCLUSIVE",
            "temp_store=FILE",  # the index's sort spills to files, not to memory
            f"cache_size=-{SPILL_CACHE_BYTES // 1024}",
        ):
            self.db.execute(f"PRAGMA {pragma}")
        self.db.execute("CREATE TABLE block (cid BLOB NOT NULL, data BLOB NOT NULL)")
        self.sealed = False

    def insert(self, rows: list[tuple[bytes, bytes]]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany("INSERT INTO block (cid, data) VALUES (?, ?)", rows)
        self.db.execute("COMMIT")

    def seal(self) -> None:
        """Build the CID index (one sort: far cheaper than keeping it in order while appending)."""
        if not self.sealed:
            self.db.execute("CREATE INDEX block_cid ON block (cid)")
            self.sealed = True

    def get(self, cid: bytes) -> bytes | None:
        self.seal()
        row = self.db.execute("SELECT data FROM block WHERE cid = ? LIMIT 1", (cid,)).fetchone()
        return None if row is None else cast(bytes, row[0])

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(DISTINCT cid) FROM block").fetchone()[0])


class BlockStore:
    """Blocks by binary CID; `get(cid)` returns the bytes or None."""

    def __init__(self, memory_bytes: int = DEFAULT_MEMORY_BYTES, spill_dir: str | None = None) -> None:
        self._memory: dict[bytes, bytes] = {}
        self._budget = memory_bytes
        self._accounted = 0
        self._spill_dir = spill_dir
        self._spill: _Spill | None = None
        self.get: Lookup = self._memory.get

    @property
    def memory_bytes(self) -> int:
        """What the blocks held in memory are accounted at (bytes plus per-block overhead)."""
        return self._accounted

    @property
    def spilled(self) -> bool:
        return self._spill is not None

    def add(self, cids: Sequence[bytes], datas: Sequence[bytes], nbytes: int) -> None:
        """Add blocks (`nbytes` = their total length); a later copy of a CID is ignored."""
        if self._spill is not None:
            self._insert(cids, datas)
            return
        cost = nbytes + BLOCK_OVERHEAD * len(cids)
        if self._accounted + cost <= self._budget:
            self._memory.update(zip(cids, datas, strict=True))
            self._accounted += cost
            return
        # Keep in memory what still fits, then spill the rest (and every later block).
        costs = accumulate(len(d) + BLOCK_OVERHEAD for d in datas)
        fits = sum(1 for c in costs if self._accounted + c <= self._budget)
        self._memory.update(zip(cids[:fits], datas[:fits], strict=True))
        self._accounted += sum(len(d) for d in datas[:fits]) + BLOCK_OVERHEAD * fits
        self._open_spill()
        self._insert(cids[fits:], datas[fits:])

    def update(self, blocks: Sequence[tuple[bytes, bytes]]) -> None:
        """Add (CID, bytes) pairs."""
        cids = [cid for cid, _ in blocks]
        datas = [data for _, data in blocks]
        self.add(cids, datas, sum(map(len, datas)))

    def seal(self) -> None:
        """Index the spilled blocks (done by the first lookup otherwise; may take long: see above)."""
        if self._spill is not None:
            self._spill.seal()

    def get_many(self, cids: Sequence[bytes], max_bytes: int) -> list[bytes | None]:
        """Blocks of a prefix of `cids` (at least one) whose total size stays within `max_bytes`.

        A missing block ends the list (as None).
        """
        found = list(map(self._memory.get, cids))
        # all() is a cheaper scan than `None in`; only an empty block makes it look twice.
        if not all(found) and None in found:
            if self._spill is None:
                return found[: found.index(None) + 1]
            return self._get_spilled(cids, max_bytes)
        datas = cast(list[bytes], found)
        if sum(map(len, datas)) <= max_bytes:
            return found
        sizes = accumulate(map(len, datas))
        return found[: max(1, sum(1 for s in sizes if s <= max_bytes))]

    def _get_spilled(self, cids: Sequence[bytes], max_bytes: int) -> list[bytes | None]:
        """`get_many` when some blocks are on disk: one at a time until the bytes are reached."""
        # One query per block: as fast as one IN query for a slice (measured), and no more data
        # is read than the slice needs.
        out: list[bytes | None] = []
        total = 0
        get = self.get
        for cid in cids:
            data = get(cid)
            if data is not None and out and total + len(data) > max_bytes:
                break
            out.append(data)
            if data is None:
                break
            total += len(data)
        return out

    def __len__(self) -> int:
        return len(self._memory) + (self._spill.count() if self._spill is not None else 0)

    def __getitem__(self, cid: bytes) -> bytes:
        data = self.get(cid)
        if data is None:
            raise KeyError(cid)
        return data

    def __contains__(self, cid: object) -> bool:
        return isinstance(cid, bytes) and self.get(cid) is not None

    def close(self) -> None:
        """Release memory and the temporary file (also done when the store is garbage collected)."""
        self._memory.clear()
        self._accounted = 0
        if self._spill is not None:
            self._spill.db.close()
            self._spill = None
        self.get = self._memory.get

    def __del__(self) -> None:
        if self._spill is not None:
            self._spill.db.close()

    def _open_spill(self) -> None:
        spill = self._spill = _Spill(self._spill_dir)
        memory = self._memory

        def get(cid: bytes) -> bytes | None:
            data = memory.get(cid)
            return data if data is not None else spill.get(cid)

        self.get = get

    def _insert(self, cids: Sequence[bytes], datas: Sequence[bytes]) -> None:
        assert self._spill is not None
        memory = self._memory
        rows = [(c, d) for c, d in zip(cids, datas, strict=True) if c not in memory]
        if rows:
            self._spill.insert(rows)
