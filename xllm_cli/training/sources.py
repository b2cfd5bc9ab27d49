"""Simple data sources for the trainer: seeded, resumable, rank-sharded batches of a list.

Stage 0 (text only) and the toy model use these; the speech stages adapt the data
pipeline's ``build_dataloader`` to the same :class:`~xllm_cli.training.trainer.DataSource`
interface. Both batch with :mod:`xllm_cli.data.sampler`. An epoch's order depends
only on (seed, epoch), so the batch at a given position is the same in a resumed
run as in an uninterrupted one.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Sequence

from ..data.sampler import BatchLimit, plan_batches


class ShardedBatches:
    """Fixed-size batches of ``items``, shuffled per epoch, dealt out to ranks in turn.

    Every rank gets the same number of batches (the few left over are dropped) so
    that DDP ranks step together.
    """

    def __init__(self, items: Sequence, batch_size: int, collate: Callable[[list], object], seed: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True) -> None:
        self.items = list(items)
        self.batch_size = max(int(batch_size), 1)
        self.collate = collate
        self.seed = int(seed)
        self.rank, self.world = rank, world_size
        self.shuffle = shuffle

    def _batches(self, epoch: int) -> list[list]:
        batches = plan_batches(
            [0.0] * len(self.items),
            BatchLimit(max_size=self.batch_size),
            order="shuffled" if self.shuffle else "given",
            seed=self.seed,
            epoch=epoch,
            world_size=self.world,
            balance="drop",
        )
        return [[self.items[i] for i in b] for b in batches[self.rank::self.world]]

    def num_batches(self, epoch: int) -> int:
        return len(self._batches(epoch))

    def iterate(self, epoch: int, start: int = 0) -> Iterator:
        for chunk in self._batches(epoch)[start:]:
            yield self.collate(chunk)


class ListSource:
    """A DataSource over in-memory lists (train, dev, dev subset for CER)."""

    def __init__(self, train: ShardedBatches, valid: Sequence, collate: Callable[[list], object],
                 batch_size: int, cer_utts: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.train = train
        self.valid = list(valid)[rank::world_size]
        self.cer = list(valid)[:cer_utts][rank::world_size]
        self.collate = collate
        self.batch_size = max(int(batch_size), 1)

    def num_batches(self, epoch: int) -> int:
        return self.train.num_batches(epoch)

    def train_batches(self, epoch: int, start: int) -> Iterable:
        return self.train.iterate(epoch, start)

    def _chunks(self, items: list) -> Iterator:
        """This rank's validation items in order, ``batch_size`` at a time."""
        for batch in plan_batches([0.0] * len(items), BatchLimit(max_size=self.batch_size), order="given"):
            yield self.collate([items[i] for i in batch])

    def valid_batches(self) -> Iterable:
        return self._chunks(self.valid)

    def cer_batches(self) -> Iterable:
        return self._chunks(self.cer)
