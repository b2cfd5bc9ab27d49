"""The one batch sampler: group items into batches under a size budget, order them, shard them.

Training, validation, stage 0's text batches and decoding all batch the same
way, parametrised (docs/architecture.md):

- **lengths**: one number per item (seconds, characters, ...), or a function
  epoch -> lengths when they change per epoch (speed perturbation);
- **limit** (:class:`BatchLimit`): a batch is full at ``max_total`` length
  units, counted as the *sum* of its lengths (what the loader reads) or
  *padded* (size x longest, what memory follows), and/or at ``max_size`` items;
- **order**: how items are laid out before packing, see :data:`ORDERS`;
- **seed, epoch**: a shuffled epoch is a pure function of (seed, epoch), so a
  resumed run rebuilds the same list and skips what it consumed;
- **rank, world_size**: every rank builds the same list and takes every
  ``world_size``-th batch; the count is first made a multiple of ``world_size``
  (``balance="split"``: split the largest batches in two, nothing is lost;
  ``"drop"``: drop the last few batches, for fixed-size batches).

An item longer than the budget on its own still gets a (single-item) batch:
dropping data silently is worse; duration filters are the place to exclude it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..console import log
from ..errors import XllmError
from .tables import c_sort_key

Lengths = Sequence[float] | Callable[[int], Sequence[float]]

# How items are laid out before packing:
#   bucketed        shuffled, cut into pools of ``pool_size``, each sorted by length
#                   (little padding), packed, then the batches shuffled (training);
#   shuffled        shuffled, packed as they come (fixed-size batches of a list);
#   shortest_first  by length, ties by position (evaluation);
#   longest_first   by length, longest first, ties by position (decoding: memory
#                   peaks in the first batch, not after an hour);
#   given           as given.
ORDERS = ("bucketed", "shuffled", "shortest_first", "longest_first", "given")
BALANCES = ("split", "drop")


@dataclass(frozen=True)
class BatchLimit:
    """When a batch is full: ``max_total`` length units (summed or padded) and/or ``max_size`` items."""

    max_total: float | None = None  # None: no budget
    padded: bool = False  # budget counts batch size x longest item instead of the sum
    max_size: int | None = None  # None or 0: no cap

    def __post_init__(self):
        if self.max_total is not None and self.max_total <= 0:
            raise XllmError(f"max_batch_seconds must be > 0, got {self.max_total}")

    def full(self, count: int, total: float, longest: float, length: float) -> bool:
        """Would a batch of ``count`` items (sum ``total``, longest ``longest``) overflow with one of ``length``?"""
        if count == 0:
            return False
        if self.max_size and count >= self.max_size:
            return True
        if self.max_total is None:
            return False
        if self.padded:
            return (count + 1) * max(longest, length) > self.max_total
        return total + length > self.max_total


def pack(indices: Sequence[int], lengths: np.ndarray, limit: BatchLimit) -> list[list[int]]:
    """Greedily pack ``indices`` in the given order into batches under ``limit``."""
    batches: list[list[int]] = []
    current: list[int] = []
    total = longest = 0.0
    for i in indices:
        length = float(lengths[i])
        if limit.full(len(current), total, longest, length):
            batches.append(current)
            current, total, longest = [], 0.0, 0.0
        current.append(int(i))
        total += length
        longest = max(longest, length)
    if current:
        batches.append(current)
    return batches


def split_for_ranks(batches: list[list[int]], world_size: int) -> list[list[int]]:
    """Split the largest batches in two until the count is a multiple of ``world_size``."""
    batches = [list(b) for b in batches]
    while len(batches) % world_size:
        largest = max(range(len(batches)), key=lambda j: (len(batches[j]), -j))
        batch = batches[largest]
        if len(batch) < 2:
            raise XllmError(
                f"cannot give {world_size} ranks the same number of batches: only {sum(map(len, batches))} utterance(s)"
            )
        half = len(batch) // 2
        batches[largest : largest + 1] = [batch[:half], batch[half:]]
    return batches


def drop_for_ranks(batches: list[list[int]], world_size: int) -> list[list[int]]:
    """Drop the last batches so that the count is a multiple of ``world_size``."""
    return batches[: len(batches) // world_size * world_size]


def plan_batches(
    lengths: Sequence[float],
    limit: BatchLimit,
    order: str = "given",
    seed: int = 0,
    epoch: int = 0,
    pool_size: int = 0,
    world_size: int = 1,
    balance: str = "split",
) -> list[list[int]]:
    """Every rank's batches (lists of item positions) before the rank split; see the module docstring."""
    if order not in ORDERS:
        raise XllmError(f"batch order '{order}': expected one of {', '.join(ORDERS)}")
    lengths = np.asarray(lengths, dtype=np.float64)
    n = len(lengths)
    if n == 0:
        return []
    if order == "bucketed":
        rng = np.random.default_rng([seed, epoch])
        perm = rng.permutation(n)
        pool = pool_size if pool_size > 0 else n
        batches: list[list[int]] = []
        for lo in range(0, n, pool):
            chunk = perm[lo : lo + pool]
            chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
            batches.extend(pack(chunk, lengths, limit))
        batches = [batches[j] for j in rng.permutation(len(batches))]
    else:
        if order == "shuffled":
            layout = np.random.default_rng([seed, epoch]).permutation(n)
        elif order == "shortest_first":
            layout = np.lexsort((np.arange(n), lengths))
        elif order == "longest_first":
            layout = np.lexsort((np.arange(n), -lengths))
        else:
            layout = np.arange(n)
        batches = pack(layout, lengths, limit)
    if balance == "drop":
        return drop_for_ranks(batches, world_size)
    return split_for_ranks(batches, world_size)


def longest_first_batches(
    items: Sequence[Any],
    batch_size: int | None,
    max_batch_seconds: float | None,
    duration: Callable[[Any], float],
) -> list[list[Any]]:
    """Decoding's batches: groups of items longest first (ties by ``utt_id`` in C order).

    ``max_batch_seconds`` bounds the padded size (batch length x longest
    utterance), which is what memory follows; a single longer utterance still
    gets a batch of its own. Without it, groups of ``batch_size`` items.
    """
    items = sorted(items, key=lambda u: c_sort_key(u.utt_id))
    lengths = [float(duration(u)) for u in items]
    if max_batch_seconds is None:
        limit = BatchLimit(max_size=batch_size)
    else:
        limit = BatchLimit(max_total=max_batch_seconds, padded=True)
    return [[items[i] for i in batch] for batch in plan_batches(lengths, limit, order="longest_first")]


class LengthBucketSampler:
    """Yields this rank's batches of dataset indices for one epoch; resumable; see the module docstring.

    A ``batch_sampler`` for torch's DataLoader, which takes any iterable of index
    lists: not a ``torch.utils.data.Sampler`` subclass, so that importing this
    module (decoding's batching does) never loads torch, ~0.4 GB of RSS that the
    CTranslate2 Whisper baseline does not need.

    ``position`` counts the batches handed out in this epoch (``start_batch``
    included), which with the epoch is what ``state_dict()`` stores.
    """

    def __init__(
        self,
        lengths: Lengths,
        limit: BatchLimit,
        order: str = "bucketed",
        seed: int = 0,
        epoch: int = 0,
        pool_size: int = 2000,
        rank: int = 0,
        world_size: int = 1,
        balance: str = "split",
        start_batch: int = 0,
    ):
        if not 0 <= rank < world_size:
            raise XllmError(f"rank {rank} is not in [0, {world_size})")
        if order not in ORDERS or balance not in BALANCES:
            raise XllmError(f"batch order '{order}' / balance '{balance}': expected {ORDERS} / {BALANCES}")
        self._lengths = lengths
        self.limit = limit
        self.order = order
        self.seed = int(seed)
        self.pool_size = int(pool_size or 0)
        self.rank = rank
        self.world_size = world_size
        self.balance = balance
        self.epoch = int(epoch)
        self.start = 0
        self.position = 0  # batches handed out so far in this epoch (start included)
        self._cache: tuple[int, list[list[int]]] | None = None
        self.set_epoch(epoch, start_batch)

    # ----------------------------------------------------------- batch lists
    def lengths(self, epoch: int) -> np.ndarray:
        values = self._lengths(epoch) if callable(self._lengths) else self._lengths
        return np.asarray(values, dtype=np.float64)

    def global_batches(self, epoch: int) -> list[list[int]]:
        """Every rank's batches of ``epoch`` before the rank split (same on every rank)."""
        return plan_batches(
            self.lengths(epoch), self.limit, self.order, self.seed, epoch, self.pool_size, self.world_size, self.balance
        )

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """This rank's batches of ``epoch`` (default: the current one), from the first."""
        epoch = self.epoch if epoch is None else epoch
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        mine = self.global_batches(epoch)[self.rank :: self.world_size]
        self._cache = (epoch, mine)
        return mine

    # ---------------------------------------------------------- epoch / resume
    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Start ``epoch`` at its ``start_batch``-th batch (0 = from the beginning)."""
        self.epoch = int(epoch)
        total = len(self.batches())
        if not 0 <= start_batch <= total:
            raise XllmError(f"cannot resume epoch {epoch} at batch {start_batch}: it has {total} batches")
        self.start = int(start_batch)
        self.position = self.start

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "num_items": len(self.lengths(self.epoch)),
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        for key, mine in (("seed", self.seed), ("num_items", len(self.lengths(int(state["epoch"])))), ("world_size", self.world_size)):
            if key in state and state[key] != mine:
                log.warning(f"resuming batches with {key}={mine} (was {state[key]}): the epoch's batches differ from the interrupted run")
        position = min(int(state["position"]), len(self.batches(int(state["epoch"]))))
        self.set_epoch(int(state["epoch"]), position)

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.batches()
        for i in range(self.start, len(batches)):
            self.position = i + 1
            yield list(batches[i])

    def __len__(self) -> int:
        return len(self.batches()) - self.start


class DynamicBatchSampler(LengthBucketSampler):
    """The training/validation sampler: at most ``max_batch_seconds`` of audio (summed) per batch.

    ``lengths``: seconds per item, or a function epoch -> seconds (lengths that
    depend on the epoch's speed-perturbation factors). ``shuffle=True`` buckets
    (shuffled pools sorted by length, batches shuffled); ``shuffle=False``
    (evaluation) sorts the whole set by length and keeps the batches in that
    order. Ranks get equal batch counts by splitting the largest batches.
    """

    def __init__(
        self,
        lengths: Lengths,
        max_batch_seconds: float,
        max_batch_size: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        epoch: int = 0,
        pool_size: int = 2000,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
    ):
        if max_batch_size is not None and max_batch_size < 1:
            max_batch_size = None
        super().__init__(
            lengths,
            BatchLimit(max_total=float(max_batch_seconds), max_size=max_batch_size),
            order="bucketed" if shuffle else "shortest_first",
            seed=seed,
            epoch=epoch,
            pool_size=pool_size,
            rank=rank,
            world_size=world_size,
            balance="split",
            start_batch=start_batch,
        )
        self.shuffle = shuffle

    @property
    def max_batch_seconds(self) -> float:
        return float(self.limit.max_total)

    @property
    def max_batch_size(self) -> int | None:
        return self.limit.max_size


def padding_fraction(batches: Sequence[Sequence[int]], lengths: Sequence[float]) -> float:
    """Padded frames / total frames (padded batch size) for ``batches`` over item ``lengths``."""
    lengths = np.asarray(lengths, dtype=np.float64)
    real = padded = 0.0
    for batch in batches:
        if len(batch):
            values = lengths[list(batch)]
            real += values.sum()
            padded += values.max() * len(batch)
    return 0.0 if padded == 0 else 1.0 - real / padded
