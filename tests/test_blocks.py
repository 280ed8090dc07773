"""The KV block pool and block tables, and the step scheduler: no model needed."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from drafting.blocks import BlockPool, BlockTable, NoFreeBlocks
from drafting.scheduler import Scheduler


def test_allocate_release_and_exhaustion():
    pool = BlockPool(3, 4)
    blocks = [pool.allocate() for _ in range(3)]
    assert sorted(blocks) == [0, 1, 2] and pool.used == 3 and pool.available == 0
    with pytest.raises(NoFreeBlocks):
        pool.allocate()
    pool.release(blocks[1])
    assert pool.available == 1 and pool.allocate() == blocks[1]
    with pytest.raises(AssertionError):
        pool.release(7 % 3) or pool.release(7 % 3) or pool.release(7 % 3)


def test_table_reserves_truncates_and_releases_whole_blocks():
    pool = BlockPool(8, 4)
    table = BlockTable(pool)
    table.reserve(9)
    assert len(table.blocks) == 3 and pool.used == 3
    table.length = 9
    table.truncate(5)  # a rejected draft: the third block goes back
    assert len(table.blocks) == 2 and pool.used == 2 and table.length == 5
    table.truncate(4)
    assert len(table.blocks) == 1
    table.release()
    assert pool.used == 0 and pool.available == 8


def test_verified_full_blocks_are_reused_by_a_later_prompt():
    pool = BlockPool(8, 4)
    first = BlockTable(pool)
    tokens = list(range(10))
    first.reserve(10)
    first.length = 10
    first.register_full_blocks(tokens)  # two full blocks
    held = list(first.blocks[:2])
    first.release()
    assert pool.used == 0 and pool.cached == 2 and pool.available == 8
    second = BlockTable(pool)
    assert second.reuse_prefix(tokens[:8] + [99, 98], max_tokens=9) == 8
    assert second.blocks == held and pool.hits == 2
    third = BlockTable(pool)  # shared while the second holds them
    assert third.reuse_prefix(tokens[:5], max_tokens=4) == 4 and third.blocks == held[:1]
    other = BlockTable(pool)
    assert other.reuse_prefix([1] + tokens[1:8], max_tokens=8) == 0, "the hash covers the whole prefix"


def test_cached_blocks_are_evicted_oldest_first_when_the_pool_runs_out():
    pool = BlockPool(3, 2)
    for start in (0, 10):
        table = BlockTable(pool)
        table.reserve(2)
        table.length = 2
        table.register_full_blocks([start, start + 1])
        table.release()
    assert pool.cached == 2
    fresh = [pool.allocate() for _ in range(2)]  # one free block, then the oldest cached one
    assert len(set(fresh)) == 2 and pool.cached == 1
    assert BlockTable(pool).reuse_prefix([10, 11, 0], 2) == 2 and BlockTable(pool).reuse_prefix([0, 1, 5], 2) == 0
    pool.forget_cached()
    assert pool.cached == 0


@dataclass
class FakeSequence:
    id: int
    context: list[int]
    table: BlockTable
    scored: list | None = None
    admitted_at: int = -1
    preempted: int = field(default=0)

    @property
    def prefill_end(self) -> int:
        return len(self.context)


def sequence(pool, seq_id, prompt_length):
    return FakeSequence(seq_id, list(range(seq_id * 1000, seq_id * 1000 + prompt_length)), BlockTable(pool))


def test_admission_is_fifo_and_bounded_by_batch_and_blocks():
    pool = BlockPool(8, 4)
    scheduler = Scheduler(pool, max_running=2, max_step_tokens=64)
    sequences = [sequence(pool, i, 9) for i in range(3)]
    for s in sequences:
        scheduler.add(s)
    scheduler.admit(step=0)
    assert scheduler.running == sequences[:2] and list(scheduler.waiting) == sequences[2:]
    big = Scheduler(BlockPool(3, 4), max_running=4, max_step_tokens=64)
    a, b = sequence(big.pool, 7, 8), sequence(big.pool, 8, 8)
    big.add(a)
    big.add(b)
    big.admit(step=0)
    assert big.running == [a], "the second prompt does not fit next to the first"


def test_prompt_chunks_fill_the_budget_left_by_decoding():
    pool = BlockPool(64, 4)
    scheduler = Scheduler(pool, max_running=4, max_step_tokens=20)
    decoding, long_prompt = sequence(pool, 1, 5), sequence(pool, 2, 100)
    for s in (decoding, long_prompt):
        scheduler.add(s)
    scheduler.admit(step=0)
    decoding.table.reserve(4)
    decoding.table.length = 4  # its context minus the last token is cached: it decodes
    plan = scheduler.plan([decoding], {1: 3}, {1: 3}, preempt=lambda s: None)
    assert plan.decoding == [decoding] and plan.draft_lengths == {1: 3}
    assert plan.prefilling == [long_prompt] and plan.chunk == {2: 20 - 4}


def test_a_prompt_chunk_never_stops_one_token_short_of_its_end():
    """Left one token short, a prompt would decode its last token next step instead of reading it in a final chunk:
    its first steps would depend on where the step budget happened to cut it."""
    pool = BlockPool(64, 4)
    scheduler = Scheduler(pool, max_running=4, max_step_tokens=20)
    just_over, longer = sequence(pool, 1, 21), sequence(pool, 2, 30)
    for s in (just_over, longer):
        scheduler.add(s)
    scheduler.admit(step=0)
    plan = scheduler.plan([], {}, {}, preempt=lambda s: None)
    assert plan.chunk == {1: 19, 2: 1}
    just_over.table.length = 19
    plan = scheduler.plan([], {}, {}, preempt=lambda s: None)
    assert plan.chunk[1] == 2  # the final chunk: its last row gives the first token


def test_the_youngest_is_preempted_when_blocks_run_out():
    pool = BlockPool(4, 4)
    scheduler = Scheduler(pool, max_running=4, max_step_tokens=64)
    old, young = sequence(pool, 1, 9), sequence(pool, 2, 4)
    scheduler.add(old)
    scheduler.admit(step=0)
    old.table.length = 8  # decoding: its context minus the last token is cached, in two full blocks
    old.table.truncate(8)
    scheduler.add(young)
    scheduler.admit(step=1)
    young.table.reserve(8)  # the young one holds the rest of the pool
    young.table.length = 3
    assert scheduler.running == [old, young] and pool.available == 0

    def preempt(s):
        s.table.release()
        scheduler.requeue(s)
    plan = scheduler.plan([old, young], {1: 4, 2: 4}, {1: 4, 2: 4}, preempt)
    assert plan.preempted == [young] and plan.decoding == [old]
    assert list(scheduler.waiting) == [young] and scheduler.running == [old]
    assert plan.room[1] == 4  # the old one drafts in full once the young one's blocks are back
