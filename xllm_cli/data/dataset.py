"""Datasets over Kaldi data directories, and the collate function that builds a ``Batch``.

Loading a dataset reads only the small text tables (``DataDir.load``); audio,
images and video frames are decoded in ``__getitem__``, i.e. in DataLoader
workers, so a large corpus costs no memory up front and start-up is instant.

Training augmentation is a function of (seed, epoch, utterance): the speed
factor of an utterance in an epoch is known before its audio is read, which
lets the batch sampler pack batches by the *perturbed* durations, and a resumed
run reproduces the augmentation of the interrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch

from ..console import log
from ..errors import XllmError
from .batch import Batch
from .features import (
    FeatureExtractor,
    choose_speed,
    load_wave,
    spec_augment,
    speed_perturb,
    utterance_generator,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..config.schema import SpecAugmentConfig

SAMPLE_RATE = 16000


# ---------------------------------------------------------------- utterances
def _as_list(datadirs) -> list:
    if isinstance(datadirs, (str, Path)):
        return [datadirs]
    return list(datadirs)


def load_utterances(
    datadirs,
    min_duration: float = 0.0,
    max_duration: float = 0.0,
    require_text: bool = False,
    speeds: Sequence[float] | None = None,
) -> list:
    """Utterances of one or more data directories (or Utterance objects), filtered by duration.

    Durations come from utt2dur (or segments); a missing one is read from the
    audio header. ``max_duration`` 0 = no upper limit. Utterance ids must be
    unique across directories. ``require_text``: every utterance needs a transcript.

    ``speeds``: the speed-perturbation factors training will apply. Every version
    the model may see must pass the filter, so ``max_duration`` applies to the
    slowest one (duration / min(speeds): 28 s at 0.9 is 31 s, past a Whisper
    encoder's 30 s) and ``min_duration`` to the fastest (duration / max(speeds)).
    """
    from .datadir import DataDir
    from .durations import utterance_duration
    from .utterance import Utterance

    utts: list = []
    origin: dict[str, str] = {}
    for source in _as_list(datadirs):
        if isinstance(source, Utterance):
            batch, where = [source], "<utterances>"
        else:
            batch, where = DataDir.load(source).utterances(), str(source)
        for u in batch:
            if u.utt_id in origin:
                raise XllmError(f"{where}: utterance id '{u.utt_id}' is also in {origin[u.utt_id]} (ids must be unique across data directories)")
            origin[u.utt_id] = where
            if require_text and u.text is None:
                raise XllmError(f"{where}/text: utterance '{u.utt_id}' has no transcript (training needs one for every utterance)")
            if u.duration is None:
                u.duration = utterance_duration(u)
            utts.append(u)
    slowest, fastest = (min(speeds), max(speeds)) if speeds else (1.0, 1.0)
    kept = [
        u
        for u in utts
        if u.duration / fastest >= (min_duration or 0.0) and (not max_duration or u.duration / slowest <= max_duration)
    ]
    if len(kept) < len(utts):
        perturbed = f" (speed-perturbed lengths, factors {min(speeds):g}..{max(speeds):g})" if speeds else ""
        log.info(f"duration filter [{min_duration or 0:g}, {max_duration or 'inf'}] s{perturbed}: "
                 f"kept {len(kept)} of {len(utts)} utterances")
    if not kept:
        raise XllmError(
            f"{', '.join(map(str, _as_list(datadirs)))}: no utterances left"
            + (f" after the duration filter [{min_duration or 0:g}, {max_duration or 'inf'}] s" if utts else "")
        )
    return kept


# ------------------------------------------------------------------ datasets
@dataclass
class DatasetOptions:
    use_audio: bool = True  # compute speech features
    use_images: bool = True  # load image.scp entries (needs an image transform)
    use_video: bool = True  # load video.scp entries (needs an image transform)
    num_frames: int = 8  # video frames per clip
    speed_perturb: Sequence[float] | None = None  # factors, training only
    spec_augment: "SpecAugmentConfig | None" = None  # training only
    seed: int = 0


class SpeechDataset(torch.utils.data.Dataset):
    """Utterances -> dicts with features (and image / video frames) computed on access."""

    def __init__(
        self,
        utterances: Sequence,
        extractor: FeatureExtractor | None,
        image_transform=None,
        train: bool = False,
        options: DatasetOptions | None = None,
    ):
        self.utts = list(utterances)
        self.extractor = extractor
        self.image_transform = image_transform
        self.train = train
        self.opts = options or DatasetOptions()
        self.epoch = 0
        if self.opts.use_audio and extractor is None:
            raise XllmError("a speech dataset needs a feature extractor (or use_audio: false)")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.utts)

    def speed_factor(self, index: int, epoch: int | None = None) -> float:
        factors = self.opts.speed_perturb if self.train else None
        if not factors:
            return 1.0
        epoch = self.epoch if epoch is None else epoch
        return choose_speed(factors, self.opts.seed, epoch, self.utts[index].utt_id)

    def lengths(self, epoch: int) -> list[float]:
        """Seconds per utterance in ``epoch`` after speed perturbation (for the batch sampler)."""
        if not (self.train and self.opts.speed_perturb):
            return [u.duration for u in self.utts]
        return [u.duration / self.speed_factor(i, epoch) for i, u in enumerate(self.utts)]

    def __getitem__(self, index: int) -> dict:
        from .images import load_image, load_video

        utt = self.utts[index]
        item = {"utt_id": utt.utt_id, "text": utt.text, "prompt": utt.prompt, "duration": utt.duration}
        if self.opts.use_audio:
            wave = load_wave(utt)
            factor = self.speed_factor(index)
            if factor != 1.0:
                wave = speed_perturb(wave, factor)
            feats = self.extractor(wave, train=self.train)
            if self.train and self.opts.spec_augment is not None and self.extractor.kind != "waveform":
                gen = utterance_generator(self.opts.seed, self.epoch, utt.utt_id, "specaug")
                feats = spec_augment(feats, self.opts.spec_augment, gen)
            item["feats"] = feats
            item["duration"] = wave.numel() / SAMPLE_RATE
        if self.image_transform is not None:
            if self.opts.use_images and utt.image is not None:
                item["image"] = load_image(utt.image, self.image_transform)
            if self.opts.use_video and utt.video is not None:
                item["video"] = load_video(utt.video, self.opts.num_frames, self.image_transform)
        return item


class TextDataset(torch.utils.data.Dataset):
    """Transcripts for stage 0 (LM training) from Kaldi ``text`` files or data directories.

    Every line is ``<utt-id> <text>``; a directory means its ``text`` file. Lines
    with an id but no text are skipped.
    """

    def __init__(self, sources):
        from .tables import read_lines

        self.items: list[tuple[str, str]] = []
        seen: set[str] = set()
        for source in _as_list(sources):
            path = Path(source)
            if path.is_dir():
                path = path / "text"
            if not path.is_file():
                raise XllmError(f"{path}: text file not found")
            for _number, line in read_lines(path):  # names file:line on bad UTF-8
                parts = line.strip().split(maxsplit=1)
                if len(parts) < 2:
                    continue
                key = parts[0]
                if key in seen:
                    key = f"{key}@{path}"  # same id in two files: keep both texts
                seen.add(key)
                self.items.append((key, parts[1]))
        if not self.items:
            raise XllmError(f"{', '.join(map(str, _as_list(sources)))}: no text lines")

    def __len__(self) -> int:
        return len(self.items)

    def lengths(self, epoch: int = 0) -> list[float]:
        return [float(len(text)) for _, text in self.items]

    def texts(self) -> list[str]:
        return [text for _, text in self.items]

    def __getitem__(self, index: int) -> dict:
        key, text = self.items[index]
        return {"utt_id": key, "text": text}


# -------------------------------------------------------------------- collate
def _stack_optional(items: list[dict], key: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Stack per-item tensors under ``key``; items without one get zeros. None when no item has one."""
    present = [it.get(key) for it in items]
    example = next((t for t in present if t is not None), None)
    if example is None:
        return None, None
    for t in present:
        if t is not None and t.shape != example.shape:
            raise XllmError(f"{key}s in one batch differ in shape: {tuple(t.shape)} vs {tuple(example.shape)}")
    out = torch.zeros((len(items),) + tuple(example.shape), dtype=example.dtype)
    for i, t in enumerate(present):
        if t is not None:
            out[i] = t
    mask = torch.tensor([t is not None for t in present], dtype=torch.bool)
    return out, mask


def collate(items: list[dict]) -> Batch:
    """Dataset items -> :class:`Batch`: features zero-padded to the longest, images/videos with masks.

    ``images``/``videos`` (and their masks) are None when no item in the batch has one.
    """
    batch = Batch(utt_ids=[it["utt_id"] for it in items])
    if any("feats" in it for it in items):
        feats = [it["feats"] for it in items]
        lens = torch.tensor([f.shape[0] for f in feats], dtype=torch.long)
        padded = torch.zeros(len(feats), int(lens.max()), feats[0].shape[1], dtype=feats[0].dtype)
        for i, f in enumerate(feats):
            padded[i, : f.shape[0]] = f
        batch.feats, batch.feat_lens = padded, lens
    texts = [it.get("text") for it in items]
    batch.texts = texts if any(t is not None for t in texts) else None
    if "prompt" in items[0]:
        batch.prompts = [it.get("prompt") for it in items]
    batch.images, batch.image_mask = _stack_optional(items, "image")
    batch.videos, batch.video_mask = _stack_optional(items, "video")
    if "duration" in items[0]:
        batch.durations = [float(it["duration"]) for it in items]
    return batch
