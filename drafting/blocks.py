"""KV blocks: a pool of fixed-size blocks shared by all sequences, and each sequence's table of them.

Boundary: block numbers, token ids and lengths only; no tensors (the KV data lives in the paged model's
cache tensors, indexed by these numbers) and no policy about who runs (drafting/scheduler.py).

Prefix reuse works at block granularity: once every slot of a block holds a verified token, the block is
registered under a hash of its tokens and of everything before it. A finished sequence's registered
blocks stay cached (evictable, oldest first) so a later prompt that starts the same way takes them instead
of recomputing them. Only full, verified blocks are shared, and a sequence only ever writes past its
shared prefix, so no block is written while another sequence reads it.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field


class NoFreeBlocks(Exception):
    """The pool has no free or evictable block left."""


class BlockPool:
    def __init__(self, num_blocks: int, block_size: int):
        assert num_blocks >= 1 and block_size >= 1
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._free: collections.deque[int] = collections.deque(range(num_blocks))
        self._refs = [0] * num_blocks
        self._hash_of: dict[int, int] = {}  # block -> prefix hash, for registered blocks
        self._block_of: dict[int, int] = {}  # prefix hash -> block
        # registered blocks no sequence uses, least recently released first: reusable, or evicted when needed
        self._evictable: collections.OrderedDict[int, None] = collections.OrderedDict()
        self.hits = 0  # blocks taken from the cache instead of recomputed

    @property
    def used(self) -> int:
        """Blocks held by at least one sequence."""
        return self.num_blocks - len(self._free) - len(self._evictable)

    @property
    def available(self) -> int:
        """Blocks an allocation can get: free ones plus cached ones no sequence holds."""
        return len(self._free) + len(self._evictable)

    @property
    def cached(self) -> int:
        return len(self._hash_of)

    def references(self, block: int) -> int:
        return self._refs[block]

    def allocate(self) -> int:
        if self._free:
            block = self._free.popleft()
        elif self._evictable:
            block, _ = self._evictable.popitem(last=False)
            del self._block_of[self._hash_of.pop(block)]
        else:
            raise NoFreeBlocks()
        self._refs[block] = 1
        return block

    def release(self, block: int) -> None:
        assert self._refs[block] > 0, f"block {block} released more often than taken"
        self._refs[block] -= 1
        if self._refs[block] == 0:
            if block in self._hash_of:
                self._evictable[block] = None
            else:
                self._free.append(block)

    def lookup(self, prefix_hash: int) -> int | None:
        """The cached block registered under this hash, taken (its reference counted), or None."""
        block = self._block_of.get(prefix_hash)
        if block is None:
            return None
        if self._refs[block] == 0:
            del self._evictable[block]
        self._refs[block] += 1
        self.hits += 1
        return block

    def register(self, block: int, prefix_hash: int) -> None:
        """Record that `block` holds the verified tokens that `prefix_hash` names (first writer wins)."""
        if block in self._hash_of or prefix_hash in self._block_of:
            return
        self._hash_of[block] = prefix_hash
        self._block_of[prefix_hash] = block

    def forget_cached(self) -> None:
        """Drop every cached prefix: the next prompts pay their whole prefill (for benchmarks)."""
        for block in list(self._evictable):
            self._free.append(block)
        self._evictable.clear()
        self._hash_of.clear()
        self._block_of.clear()


def block_hashes(tokens: list[int], block_size: int, count: int) -> list[int]:
    """Prefix hashes of the first `count` full blocks of `tokens`: each covers its block and all before it."""
    hashes, previous = [], 0
    for i in range(count):
        previous = hash((previous, tuple(tokens[i * block_size:(i + 1) * block_size])))
        hashes.append(previous)
    return hashes


@dataclass
class BlockTable:
    """One sequence's blocks, in order. `length` tokens of KV are valid; the slots after them are scratch."""

    pool: BlockPool
    blocks: list[int] = field(default_factory=list)
    length: int = 0
    registered: int = 0  # leading blocks registered (or taken) under their prefix hash

    @property
    def capacity(self) -> int:
        return len(self.blocks) * self.pool.block_size

    def reuse_prefix(self, tokens: list[int], max_tokens: int) -> int:
        """Take the cached blocks that hold a prefix of `tokens` (at most `max_tokens` of them); returns the
        number of tokens whose KV is now valid. Only for an empty table."""
        assert not self.blocks and self.length == 0
        size = self.pool.block_size
        for prefix_hash in block_hashes(tokens, size, max_tokens // size):
            block = self.pool.lookup(prefix_hash)
            if block is None:
                break
            self.blocks.append(block)
        self.registered = len(self.blocks)
        self.length = len(self.blocks) * size
        return self.length

    def reserve(self, length: int) -> None:
        """Hold blocks for `length` tokens. Raises NoFreeBlocks (keeping what it got) when the pool is empty."""
        while self.capacity < length:
            self.blocks.append(self.pool.allocate())

    def truncate(self, length: int) -> None:
        """Keep KV for the first `length` tokens; blocks wholly past them go back to the pool."""
        assert self.registered * self.pool.block_size <= length <= self.capacity, "verified tokens never roll back"
        self.length = length
        keep = -(-length // self.pool.block_size)
        while len(self.blocks) > keep:
            self.pool.release(self.blocks.pop())

    def register_full_blocks(self, tokens: list[int]) -> None:
        """Register the blocks that `tokens` (the verified sequence, covering `length`) now fill."""
        size = self.pool.block_size
        full = min(self.length, len(tokens)) // size
        if full <= self.registered:
            return
        for i, prefix_hash in enumerate(block_hashes(tokens, size, full)):
            if i >= self.registered:
                self.pool.register(self.blocks[i], prefix_hash)
        self.registered = full

    def release(self) -> None:
        for block in reversed(self.blocks):
            self.pool.release(block)
        self.blocks.clear()
        self.length = 0
        self.registered = 0
