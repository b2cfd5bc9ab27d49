"""Loading batches for training and validation: a resumable, DDP-aware loader over one sampler.

Which utterances go together is :mod:`.sampler`'s job (:class:`DynamicBatchSampler`:
at most ``max_batch_seconds`` of audio per batch, bucketed by length, seeded by
(seed, epoch), ranks given equal batch counts). This module turns those index
batches into :class:`~xllm_cli.data.batch.Batch` objects with DataLoader workers.

Because an epoch's batch list is deterministic, resuming after a kill is
"rebuild the list, skip the first k": :class:`BatchLoader` counts the batches
the trainer actually consumed (not the ones DataLoader workers prefetched) and
its ``state_dict()`` stores (epoch, position).
"""

from __future__ import annotations

import torch

from ..config.schema import BatchConfig
from ..errors import XllmError
from .audio import AudioProblem
from .batch import Batch
from .sampler import DynamicBatchSampler


# ------------------------------------------------------------------- loader
def _pin(batch):
    for name, value in vars(batch).items():
        if isinstance(value, torch.Tensor):
            setattr(batch, name, value.pin_memory())
    return batch


def _clean_worker_errors(loader):
    """Re-raise a user error from a worker as one line (DataLoader appends the worker's traceback)."""
    iterator = iter(loader)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except XllmError as e:
            text = str(e)
            if "Original Traceback" in text:
                if isinstance(e, AudioProblem):  # rebuilt from the message: its id and reason are parsed
                    raise AudioProblem(e.utt_id, e.reason) from None
                last = [line for line in text.splitlines() if line.strip()][-1]
                text = last.split("XllmError: ", 1)[-1]
                raise XllmError(text) from None
            raise
        yield batch


def _worker_init(_worker_id: int) -> None:
    # Each worker computes features for whole utterances; intra-op threads in every
    # worker would oversubscribe the cores the trainer needs.
    torch.set_num_threads(1)


class BatchLoader:
    """An iterable of :class:`~xllm_cli.data.batch.Batch` over one epoch, resumable.

    ``position`` counts the batches handed to the caller in this epoch, which is
    what a checkpoint must store (workers may have prepared more). Use
    ``set_epoch(e)`` before each epoch; ``state_dict``/``load_state_dict`` for resume.
    """

    def __init__(self, dataset, sampler: DynamicBatchSampler, collate_fn, num_workers: int = 0,
                 prefetch_factor: int | None = None, pin_memory: bool = False):
        self.dataset = dataset
        self.sampler = sampler
        self.collate_fn = collate_fn
        self.num_workers = int(num_workers)
        self.prefetch_factor = prefetch_factor
        self.pin_memory = pin_memory
        self.position = sampler.start
        self._sync_dataset_epoch()

    def _sync_dataset_epoch(self) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.sampler.epoch)

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.sampler.set_epoch(epoch, start_batch)
        self.position = self.sampler.start
        self._sync_dataset_epoch()

    def state_dict(self) -> dict:
        state = self.sampler.state_dict()
        state["position"] = self.position
        return state

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)
        self.position = self.sampler.start
        self._sync_dataset_epoch()

    def num_batches(self, epoch: int) -> int:
        """This rank's batches in ``epoch`` (all of them, from the first)."""
        return len(self.sampler.batches(epoch))

    def iterate(self, epoch: int, start: int = 0):
        """Batches of ``epoch`` from its ``start``-th (the trainer's DataSource.train_batches)."""
        self.set_epoch(epoch, start)
        return iter(self)

    def __len__(self) -> int:
        """Batches left in this epoch from where iteration starts."""
        return len(self.sampler)

    def __iter__(self):
        # A fresh DataLoader per pass: workers fork with the dataset's current epoch.
        kwargs = {}
        if self.num_workers > 0:
            kwargs = {"worker_init_fn": _worker_init, "prefetch_factor": self.prefetch_factor or 2}
        # DataLoader pins only tensors, containers and objects with a pin_memory() method;
        # a Batch without one is pinned here (page-locked memory for async host-to-GPU copies).
        pin = self.pin_memory and torch.cuda.is_available()
        pin_here = pin and not hasattr(Batch, "pin_memory")
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=self.sampler,
            collate_fn=self.collate_fn,
            num_workers=self.num_workers,
            pin_memory=pin and not pin_here,
            **kwargs,
        )
        self.position = self.sampler.start
        for batch in _clean_worker_errors(loader):
            if pin_here:
                batch = _pin(batch)
            self.position += 1
            yield batch


# --------------------------------------------------------------- factories
def build_dataloader(
    datadirs,
    extractor,
    image_transform,
    opts: BatchConfig,
    train: bool,
    seed: int = 0,
    epoch: int = 0,
    start_batch: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> BatchLoader:
    """Batches of ``Batch`` over one or more data directories, as ``opts`` (``data.batch``) says.

    ``datadirs``: a path, a list of paths, or a list of Utterance. ``train`` turns on
    shuffling, duration filters and augmentation. ``start_batch`` skips the first
    batches of ``epoch`` (resume); ``rank``/``world_size`` split batches for DDP.
    """
    from .dataset import DatasetOptions, SpeechDataset, collate, load_utterances
    from .features import parse_speed_factors, spec_augment_config

    require_text = opts.require_text if opts.require_text is not None else train
    speeds = parse_speed_factors(opts.speed_perturb) if train else None
    utts = load_utterances(
        datadirs,
        min_duration=opts.min_duration if train else 0.0,
        max_duration=opts.max_duration if train else 0.0,
        require_text=require_text,
        speeds=speeds,
    )
    dataset = SpeechDataset(
        utts,
        extractor,
        image_transform,
        train=train,
        options=DatasetOptions(
            use_audio=opts.use_audio,
            use_images=opts.use_images,
            use_video=opts.use_video,
            num_frames=int(opts.num_frames),
            speed_perturb=speeds,
            spec_augment=spec_augment_config(opts.spec_augment) if train else None,
            seed=seed,
        ),
    )
    sampler = _sampler(dataset.lengths, float(opts.max_batch_seconds), opts, train, seed, epoch, rank, world_size, start_batch)
    return BatchLoader(dataset, sampler, collate, opts.num_workers, opts.prefetch_factor, opts.pin_memory)


def build_text_dataloader(
    sources,
    opts: BatchConfig,
    train: bool,
    seed: int = 0,
    epoch: int = 0,
    start_batch: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> BatchLoader:
    """Stage 0: batches of ``Batch(utt_ids, texts=...)`` from Kaldi ``text`` files or data dirs.

    Batched like speech, by characters: ``opts.max_batch_chars`` and ``opts.max_batch_size``.
    """
    from .dataset import TextDataset, collate

    dataset = TextDataset(sources)
    # Characters stand in for seconds: the sampler only sums lengths.
    sampler = _sampler(dataset.lengths(), float(opts.max_batch_chars), opts, train, seed, epoch, rank, world_size, start_batch)
    return BatchLoader(dataset, sampler, collate, opts.num_workers, opts.prefetch_factor, opts.pin_memory)


def _sampler(lengths, max_total: float, opts: BatchConfig, train: bool, seed: int, epoch: int,
             rank: int, world_size: int, start_batch: int) -> DynamicBatchSampler:
    """The dynamic batch sampler both loaders use: at most ``max_total`` length units a batch."""
    return DynamicBatchSampler(
        lengths,
        max_batch_seconds=max_total,
        max_batch_size=int(opts.max_batch_size) or None,
        shuffle=train and opts.shuffle,
        seed=seed,
        epoch=epoch,
        pool_size=int(opts.pool_size),
        rank=rank,
        world_size=world_size,
        start_batch=start_batch,
    )
