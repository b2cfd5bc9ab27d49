"""Dynamic batching: caps, coverage, determinism, resume, DDP split, padding; the resumable loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xllm_cli.data.batching import BatchLoader
from xllm_cli.data.sampler import DynamicBatchSampler, padding_fraction, split_for_ranks
from xllm_cli.errors import XllmError

torch.set_num_threads(1)


def lengths(n: int = 500, seed: int = 0) -> np.ndarray:
    """Utterance durations between 1 and 15 s, like a read-speech corpus."""
    return np.random.default_rng(seed).uniform(1.0, 15.0, n)


def flat(batches) -> list[int]:
    return [i for b in batches for i in b]


def test_batches_respect_caps_and_cover_each_item_once():
    lens = lengths()
    s = DynamicBatchSampler(lens, max_batch_seconds=60, max_batch_size=8, seed=1)
    batches = list(s)
    assert sorted(flat(batches)) == list(range(len(lens)))
    assert all(lens[b].sum() <= 60 for b in batches)
    assert all(len(b) <= 8 for b in batches)
    assert len(s) == len(batches)
    # an item longer than the cap still gets a batch of its own (nothing silently dropped)
    s = DynamicBatchSampler([1.0, 100.0, 2.0], max_batch_seconds=10)
    assert sorted(map(sorted, s)) == [[0, 2], [1]]


def test_deterministic_per_seed_and_epoch_and_differs_across_epochs():
    lens = lengths()
    a = DynamicBatchSampler(lens, 60, seed=3, epoch=2).batches()
    b = DynamicBatchSampler(lens, 60, seed=3, epoch=2).batches()
    assert a == b
    assert DynamicBatchSampler(lens, 60, seed=3, epoch=3).batches() != a
    assert DynamicBatchSampler(lens, 60, seed=4, epoch=2).batches() != a
    s = DynamicBatchSampler(lens, 60, seed=3)
    s.set_epoch(2)
    assert list(s) == a


def test_resume_from_position_gives_exactly_the_rest():
    lens = lengths()
    full = list(DynamicBatchSampler(lens, 60, seed=0, epoch=1))
    k = 7
    s = DynamicBatchSampler(lens, 60, seed=0, epoch=1, start_batch=k)
    assert len(s) == len(full) - k
    assert list(s) == full[k:]
    # via state_dict: stop after k batches, restore into a fresh sampler
    first = DynamicBatchSampler(lens, 60, seed=0, epoch=1)
    it = iter(first)
    for _ in range(k):
        next(it)
    state = first.state_dict()
    assert state["epoch"] == 1 and state["position"] == k
    fresh = DynamicBatchSampler(lens, 60, seed=0)
    fresh.load_state_dict(state)
    assert list(fresh) == full[k:]
    with pytest.raises(XllmError, match="cannot resume"):
        DynamicBatchSampler(lens, 60, start_batch=len(full) + 1)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ddp_ranks_disjoint_cover_all_equal_counts(world_size):
    lens = lengths(301)
    ranks = [DynamicBatchSampler(lens, 45, seed=9, epoch=1, rank=r, world_size=world_size).batches() for r in range(world_size)]
    assert len({len(b) for b in ranks}) == 1, "every rank must get the same number of batches"
    items = [set(flat(b)) for b in ranks]
    for i in range(world_size):
        for j in range(i + 1, world_size):
            assert not items[i] & items[j]
    assert sorted(flat(sum(ranks, []))) == list(range(len(lens)))
    assert all(lens[b].sum() <= 45 for b in sum(ranks, []))


def test_split_for_ranks_edge_cases():
    # 2 batches for 2 ranks: unchanged; 3 batches: the largest is split in two
    assert split_for_ranks([[0, 1, 2, 3], [4]], 2) == [[0, 1, 2, 3], [4]]
    assert split_for_ranks([[0, 1, 2, 3], [4], [5]], 2) == [[0, 1], [2, 3], [4], [5]]
    with pytest.raises(XllmError, match="same number of batches"):
        split_for_ranks([[0]], 2)


def test_padding_lower_than_random_batching():
    lens = lengths(2000)
    dynamic = DynamicBatchSampler(lens, 120, seed=0, pool_size=1000).batches()
    avg = len(lens) / len(dynamic)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(lens))
    size = max(int(round(avg)), 1)
    random_batches = [perm[i : i + size] for i in range(0, len(lens), size)]
    pd, pr = padding_fraction(dynamic, lens), padding_fraction(random_batches, lens)
    assert pd < 0.10 and pr > 0.3 and pd < pr / 3


def test_evaluation_sorted_without_shuffle():
    lens = [3.0, 1.0, 2.0, 5.0]
    s = DynamicBatchSampler(lens, 4.0, shuffle=False)
    assert s.batches() == [[1, 2], [0], [3]]
    s.set_epoch(5)
    assert s.batches() == [[1, 2], [0], [3]]


class _Items(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return (i, self.epoch)


def _ids(batch):
    return [i for i, _ in batch]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_position_counts_consumed_batches_and_resumes(num_workers):
    lens = lengths(200)
    make = lambda: BatchLoader(_Items(200), DynamicBatchSampler(lens, 60, seed=2, epoch=4), list, num_workers=num_workers)
    full = [_ids(b) for b in make()]
    loader = make()
    it = iter(loader)
    got = [_ids(next(it)) for _ in range(5)]
    state = loader.state_dict()
    # workers prefetch ahead; the state counts only what the caller received
    assert state["position"] == 5 and state["epoch"] == 4
    del it
    resumed = make()
    resumed.set_epoch(0)
    resumed.load_state_dict(state)
    assert len(resumed) == len(full) - 5
    rest = [b for b in resumed]
    assert got + [_ids(b) for b in rest] == full
    assert all(e == 4 for b in rest for _, e in b), "the dataset sees the resumed epoch"
    # next epoch starts at 0 again
    resumed.set_epoch(5)
    nxt = [_ids(b) for b in resumed]
    assert sorted(flat(nxt)) == list(range(200)) and nxt != full
    assert resumed.num_batches(4) == len(full)
    assert [_ids(b) for b in resumed.iterate(4, 3)] == full[3:]


# ---------------------------------------------------------------- the one sampler's other uses
def test_longest_first_batches_for_decoding():
    from types import SimpleNamespace

    from xllm_cli.data.sampler import longest_first_batches

    utts = [SimpleNamespace(utt_id=u, duration=d) for u, d in (("c", 2.0), ("a", 5.0), ("b", 2.0), ("d", 1.0))]
    ids = lambda groups: [[u.utt_id for u in g] for g in groups]
    assert ids(longest_first_batches(utts, 3, None, lambda u: u.duration)) == [["a", "b", "c"], ["d"]]
    # padded budget: batch size x longest; a longer utterance alone
    assert ids(longest_first_batches(utts, None, 4.5, lambda u: u.duration)) == [["a"], ["b", "c"], ["d"]]


def test_sharded_batches_fixed_size_equal_per_rank():
    from xllm_cli.training.sources import ShardedBatches

    items = list(range(19))  # 5 batches of at most 4: the last one is dropped for 2 ranks
    ranks = [ShardedBatches(items, 4, list, seed=1, rank=r, world_size=2) for r in range(2)]
    got = [r._batches(3) for r in ranks]
    assert len(got[0]) == len(got[1]) == 2 and all(len(b) == 4 for g in got for b in g)
    assert got == [r._batches(3) for r in ranks] and got != [r._batches(4) for r in ranks]
    assert ShardedBatches(items, 4, list, shuffle=False)._batches(0)[0] == [0, 1, 2, 3]
