"""The embedded mini corpus: synthesized Mandarin (or English) smart-home speech, pictures and clips.

``prepare_mini(data)`` writes Kaldi data directories:

============== ======= ==========================================================
set            utts    content
============== ======= ==========================================================
train          2000    speech, all templates, training combinations
dev            150     speech, held-out dev combinations
test           200     speech, held-out test combinations (never in train/lm_text)
train_img      800     speech + picture (image.scp); 30% with the pictured word drowned
test_img       150     speech + picture, test combinations, clean
test_img_noisy 150     the test_img sentences with the pictured word drowned in noise
video          20      MP4 clips (moving picture + speech): video.scp, wav.scp -> mp4
lm_text        4000    text only, training combinations (for the stage-0 LM)
============== ======= ==========================================================

Everything is derived from ``seed``: one random stream per set, so a set's
utterance i is the same whatever the sizes of the others (``scale`` only
truncates). Audio is espeak-ng ``cmn-latn-pinyin`` with 12 voice variants
(the speakers), per-utterance speed (140-200 wpm) and pitch, background noise
(white, pink or speech-shaped) at 15-30 dB SNR, 16 kHz mono 16-bit.

``lang="en"`` writes the same corpus in English (:mod:`mini_lang`,
:mod:`mini_grammar_en`): every random draw is the same, so with one seed each
English utterance translates the Mandarin one, with the same speaker variant,
noise and picture, spoken by espeak-ng American and British English.

Media files are named ``<utt>.<digest>.<ext>`` where the digest covers
everything that determines the file: a rerun with the same arguments finds them
and skips the work (resumable after a kill, since files are renamed into place
only when complete); different arguments never reuse a stale file.
DATA/local/ keeps the lexicon (char -> pinyin; English: words.txt), the held-out
combinations and the drowned word spans.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import XllmError
from ..fsutil import atomic_write_text
from ..procutil import die_with_parent
from . import mini_grammar as G
from .mini_lang import get_language
from .mini_tts import VOICE as MANDARIN_VOICE

# speaker = espeak variant, with a base speed (wpm) and pitch
SPEAKERS: list[tuple[str, int, int]] = [
    ("f1", 165, 55), ("f2", 175, 62), ("f3", 155, 48), ("f4", 185, 58), ("f5", 160, 66),
    ("m1", 170, 42), ("m2", 150, 38), ("m3", 180, 50), ("m4", 160, 45), ("m5", 190, 35),
    ("m6", 155, 52), ("m7", 175, 40),
]
SIZES = {"train": 2000, "dev": 150, "test": 200, "train_img": 800, "test_img": 150, "video": 20, "lm_text": 4000}
TAGS = {"train": "tr", "dev": "dv", "test": "ts", "train_img": "ti", "test_img": "si",
        "test_img_noisy": "sn", "video": "vd"}
SPEECH_SETS = ["train", "dev", "test", "train_img", "test_img", "test_img_noisy", "video"]
TRAIN_IMG_DROWN_FRACTION = 0.3  # teaches the model to look at the picture when a word is inaudible
NOISE_KINDS = ["white", "pink", "babble"]
SNR_RANGE = (15.0, 30.0)
SPEED_RANGE = (140, 200)
IMAGE_SIZE = 96
VERSION = 2  # bump when the rendering changes: every media file is regenerated
# Job fields added after VERSION 2, left out of the file digest at these values so
# that existing Mandarin files keep their names (and are reused).
_LATER_FIELDS = {"voice": MANDARIN_VOICE}


@dataclass
class MiniOptions:
    seed: int = 0
    scale: float = 1.0  # multiplies every set size (tests use 0.05)
    jobs: int = 2
    audio_dir: Path | None = None  # default DATA/audio
    backend: str = "auto"  # espeak back end: auto, binary, library
    image_size: int = IMAGE_SIZE
    lang: str = "zh"  # zh or en (mini_lang)


@dataclass
class UttJob:
    """Everything a worker needs to make one utterance's files (picklable, deterministic)."""

    utt_id: str
    spk: str
    set_name: str
    text: str
    pieces: list[tuple[str, bool]]  # (what espeak reads: pinyin or English words, is_key)
    key_word: str
    speed: int
    pitch: int
    noise: str
    snr: float
    gain: float
    drown: bool
    rng_seed: int
    wav: str
    image: str | None = None
    scene: dict | None = None
    video: str | None = None
    backend: str = "auto"
    image_size: int = IMAGE_SIZE
    voice: str = MANDARIN_VOICE  # espeak voice, without the speaker's variant


@dataclass
class UttResult:
    utt_id: str
    duration: float
    key_span: tuple[float, float] | None
    made: bool  # False when every file already existed


@dataclass
class MiniReport:
    sets: dict[str, dict] = field(default_factory=dict)  # name -> {utterances, speakers, hours, units}
    unit: str = "chars"  # what "units" counts: distinct chars (Mandarin) or words (English)
    made: int = 0
    reused: int = 0
    seconds: float = 0.0
    backend: str = ""


def _digest(obj) -> str:
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:8]


def _scaled(n: int, scale: float) -> int:
    return max(2, int(round(n * scale)))


def _scene_for(sentence: G.Sentence, rng: random.Random) -> dict:
    """The picture for a visual sentence: its colour (or a random one), object and count."""
    slots = sentence.slots
    colour = slots.get("C") or rng.choice([w for w, _ in G.COLOURS])
    count = 1 if "N" not in slots else [k for k, v in G.COUNT_WORDS.items() if v == slots["N"]][0]
    from .mini_images import make_scene

    scene = make_scene(slots["O"], G.COLOUR_RGB[colour], count, rng)
    return asdict(scene)


def plan_sets(data: Path, media: Path, opts: MiniOptions) -> tuple[dict[str, list[UttJob]], list[str], G.Holdout]:
    """All utterance jobs per set, and the LM text; pure function of the options."""
    lang = get_language(opts.lang)
    holdout = G.make_holdout(opts.seed)
    pools = G.sentence_pools(holdout)
    engine_tag = opts.backend
    plans: dict[str, list[UttJob]] = {}

    def jobs_for(set_name: str, pool: str, n: int, visual: bool, drown_fraction: float = 0.0,
                 with_video: bool = False) -> list[UttJob]:
        rng = random.Random(f"mini-{opts.seed}-{set_name}")
        sentences = G.sample_sentences(rng, pools[pool], SIZES[set_name], visual_only=visual)[:n]
        out = []
        for i, s in enumerate(sentences):
            template = G.TEMPLATE_BY_NAME[s.template]
            keys = template.keys or tuple(s.slots)
            key = rng.choice(keys)
            spk, base_speed, base_pitch = rng.choice(SPEAKERS)
            speed = int(np.clip(base_speed + rng.randint(-12, 12), *SPEED_RANGE))
            pitch = int(np.clip(base_pitch + rng.randint(-8, 8), 20, 80))
            spoken = lang.render(s, key)
            drowned = rng.random() < drown_fraction
            noise, snr, gain = rng.choice(NOISE_KINDS), round(rng.uniform(*SNR_RANGE), 1), round(rng.uniform(0.3, 0.9), 2)
            scene = _scene_for(s, rng) if visual else None
            job = UttJob(
                utt_id=f"{spk}-{TAGS[set_name]}-{i:05d}", spk=spk, set_name=set_name, text=spoken.text,
                pieces=spoken.pieces, key_word=spoken.key_word, speed=speed, pitch=pitch, noise=noise, snr=snr,
                gain=gain, drown=drowned, rng_seed=rng.getrandbits(32), wav="", scene=scene,
                backend=engine_tag, image_size=opts.image_size, voice=lang.voice(spk),
            )
            _name_files(job, media, with_image=visual and not with_video, with_video=with_video)
            out.append(job)
        return out

    plans["train"] = jobs_for("train", "train", _scaled(SIZES["train"], opts.scale), False)
    plans["dev"] = jobs_for("dev", "dev", _scaled(SIZES["dev"], opts.scale), False)
    plans["test"] = jobs_for("test", "test", _scaled(SIZES["test"], opts.scale), False)
    plans["train_img"] = jobs_for("train_img", "train", _scaled(SIZES["train_img"], opts.scale), True,
                                  TRAIN_IMG_DROWN_FRACTION)
    plans["test_img"] = jobs_for("test_img", "test", _scaled(SIZES["test_img"], opts.scale), True)
    noisy = []
    for job in plans["test_img"]:  # same sentence, voice, picture and background noise; word drowned
        twin = UttJob(**{**asdict(job), "utt_id": job.utt_id.replace(f"-{TAGS['test_img']}-", f"-{TAGS['test_img_noisy']}-"),
                         "set_name": "test_img_noisy", "drown": True})
        twin.pieces = [tuple(p) for p in twin.pieces]
        _name_files(twin, media, with_image=False, with_video=False)
        twin.image = job.image  # share the clean set's picture
        noisy.append(twin)
    plans["test_img_noisy"] = noisy
    plans["video"] = jobs_for("video", "test", max(2, min(SIZES["video"], _scaled(SIZES["video"], opts.scale * 4))),
                              True, with_video=True)
    lm_rng = random.Random(f"mini-{opts.seed}-lm_text")
    lm = [lang.render(s, s.values[0][0]).text  # the key is irrelevant to the text
          for s in G.sample_sentences(lm_rng, pools["train"], _scaled(SIZES["lm_text"], opts.scale))]
    return plans, lm, holdout


def _name_files(job: UttJob, media: Path, with_image: bool, with_video: bool) -> None:
    spec = {k: v for k, v in asdict(job).items() if k not in ("wav", "image", "video", "utt_id", "set_name")
            and not (k in _LATER_FIELDS and v == _LATER_FIELDS[k])}
    spec["version"] = VERSION
    d = _digest(spec)
    folder = media / job.set_name
    job.wav = str(folder / f"{job.utt_id}.{d}.wav")
    job.image = str(folder / f"{job.utt_id}.{d}.png") if with_image else None
    job.video = str(folder / f"{job.utt_id}.{d}.mp4") if with_video else None


# ------------------------------------------------------------------------ worker


def _write_wav_atomic(path: Path, wave: np.ndarray, rate: int) -> None:
    import soundfile

    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.wav")
    try:
        soundfile.write(str(tmp), wave, rate, subtype="PCM_16")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_span(span_file: Path) -> tuple[bool, list | None]:
    """``(readable, span)`` of a ``.span`` sidecar: ``[start, end]`` or None (no key word).

    An empty or broken sidecar (an older run killed while writing it) counts as not
    there, so that the utterance is made again instead of failing every rerun.
    """
    try:
        span = json.loads(span_file.read_text())
    except (OSError, ValueError):
        return False, None
    if span is None or (isinstance(span, list) and len(span) == 2 and all(isinstance(x, (int, float)) for x in span)):
        return True, span
    return False, None


def make_utterance(job: UttJob) -> UttResult:
    """Synthesize (or find) one utterance's wav, picture and clip."""
    import soundfile

    from . import mini_tts as T
    from .mini_images import Scene, render

    wav, image = Path(job.wav), Path(job.image) if job.image else None
    video = Path(job.video) if job.video else None
    span_file = wav.with_suffix(".span")
    ok, span = _read_span(span_file)
    done = wav.is_file() and ok and (image is None or image.is_file()) and (video is None or video.is_file())
    if done:
        return UttResult(job.utt_id, soundfile.info(str(wav)).duration, tuple(span) if span else None, False)
    wav.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(job.rng_seed)
    if not wav.is_file() or not ok:
        voice = T.Voice(job.spk, job.speed, job.pitch, job.voice)
        wave, span = T.speak_pieces([tuple(p) for p in job.pieces], voice, rng, 16000, job.backend)
        wave = T.add_noise(wave, job.snr, job.noise, 16000, rng)
        if job.drown and span is not None:
            wave = T.drown(wave, span, 16000, rng)
        peak = float(np.abs(wave).max()) or 1.0
        wave = (wave * (job.gain / peak)).astype(np.float32)
        _write_wav_atomic(wav, wave, 16000)
        atomic_write_text(span_file, json.dumps(list(span) if span else None))
    duration = soundfile.info(str(wav)).duration
    if job.scene is not None:
        scene = Scene(**{**job.scene, "rgb": tuple(job.scene["rgb"]), "background": tuple(job.scene["background"]),
                         "boxes": tuple(tuple(b) for b in job.scene["boxes"])})
        if image is not None and not image.is_file():
            tmp = image.with_name(f".{image.stem}.tmp{os.getpid()}.png")
            render(scene, job.image_size).save(tmp, format="PNG")
            os.replace(tmp, image)
        if video is not None and not video.is_file():
            from .mini_video import write_video

            write_video(video, scene, wav, duration, job.image_size, phase=float(rng.uniform(0, 6.28)))
    return UttResult(job.utt_id, duration, tuple(span) if span else None, True)


def _make_batch(jobs: list[UttJob]) -> list[UttResult]:
    import torch

    torch.set_num_threads(1)  # one core per worker process; --jobs sets the parallelism
    return [make_utterance(j) for j in jobs]


# ------------------------------------------------------------------------- driver


def _check_tools(backend: str) -> str:
    from ..data.media import require_ffmpeg
    from .mini_tts import get_engine

    require_ffmpeg()
    return get_engine(backend).name


def prepare_mini(data: str | Path, opts: MiniOptions | None = None, progress: bool = True) -> MiniReport:
    """Write the mini corpus under ``data``; see the module docstring."""
    from ..console import log, progress_bar
    from ..data.datadir import Utterance, write_datadir
    from ..data.tables import write_table

    opts = opts or MiniOptions()
    if opts.scale <= 0:
        raise XllmError(f"--scale must be positive, not {opts.scale}")
    lang = get_language(opts.lang)  # an unknown language fails here, before any work
    started = time.perf_counter()
    data = Path(data).absolute()
    media = Path(opts.audio_dir).absolute() if opts.audio_dir else data / "audio"
    report = MiniReport(backend=_check_tools(opts.backend), unit=lang.unit)
    # The resolved back end goes into every file's digest: binary and library differ slightly.
    opts = replace(opts, backend=report.backend)
    plans, lm_text, holdout = plan_sets(data, media, opts)
    _check_closed(plans, lm_text, lang)
    log.info(f"mini corpus: language {opts.lang}, seed {opts.seed}, scale {opts.scale}, {opts.jobs} jobs, "
             f"media in {media}, espeak-ng {report.backend}")

    all_jobs = [j for name in SPEECH_SETS for j in plans[name]]
    batches = [all_jobs[i : i + 16] for i in range(0, len(all_jobs), 16)]
    results: dict[str, UttResult] = {}
    with (progress_bar("utt") if progress else _NoBar()) as bar:
        task = bar.add_task("synthesizing", total=len(all_jobs))
        if opts.jobs <= 1:
            for batch in batches:
                for r in _make_batch(batch):
                    results[r.utt_id] = r
                bar.advance(task, len(batch))
        else:
            # Workers die with this process: a `kill -9` of prep mini leaves none behind.
            with ProcessPoolExecutor(max_workers=opts.jobs, initializer=die_with_parent) as pool:
                for batch_results in pool.map(_make_batch, batches):
                    for r in batch_results:
                        results[r.utt_id] = r
                    bar.advance(task, len(batch_results))
    report.made = sum(r.made for r in results.values())
    report.reused = len(results) - report.made

    for name in SPEECH_SETS:
        utts = []
        for job in plans[name]:
            r = results[job.utt_id]
            utts.append(Utterance(
                utt_id=job.utt_id, spk=job.spk, recording=job.utt_id,
                path=job.video or job.wav, text=job.text, duration=round(r.duration, 4),
                image=job.image, video=job.video,
            ))
        write_datadir(data / name, utts)
        texts = [u.text for u in utts]
        report.sets[name] = {
            "utterances": len(utts), "speakers": len({u.spk for u in utts}),
            "hours": sum(u.duration for u in utts) / 3600, "units": len({w for t in texts for w in lang.units(t)}),
        }
    write_table(data / "lm_text" / "text", {f"lm-{i:06d}": t for i, t in enumerate(lm_text)})
    report.sets["lm_text"] = {"utterances": len(lm_text), "speakers": 0, "hours": 0.0,
                              "units": len({w for t in lm_text for w in lang.units(t)})}
    _write_local(data / "local", plans, results, holdout, lang)
    report.seconds = time.perf_counter() - started
    for name, st in report.sets.items():
        log.info(f"{name}: {st['utterances']} utterances, {st['speakers']} speakers, "
                 f"{st['hours']:.3f} h, {st['units']} distinct {lang.unit}")
    log.info(f"{report.made} utterances synthesized, {report.reused} reused, {report.seconds:.1f} s")
    return report


class _NoBar:
    """Stands in for the progress bar when the caller wants none."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, *args, **kwargs):
        return 0

    def advance(self, *args, **kwargs):
        pass


def _check_closed(plans: dict[str, list[UttJob]], lm_text: list[str], lang) -> None:
    """Test sentences never occur in training material, and every test character (word) does."""
    train_text = {j.text for j in plans["train"]} | {j.text for j in plans["train_img"]} | set(lm_text)
    for name in ("test", "test_img", "dev"):
        leaked = {j.text for j in plans[name]} & train_text
        if leaked:
            raise AssertionError(f"{name} sentences in training material: {sorted(leaked)[:3]}")
    train_units = {u for j in plans["train"] for u in lang.units(j.text)}
    missing = {u for j in plans["test"] + plans["test_img"] for u in lang.units(j.text)} - train_units
    if missing and len(plans["train"]) >= 500:  # tiny test runs may not cover every character
        raise AssertionError(f"test {lang.unit} never seen in train: {' '.join(sorted(missing))}")


def _write_local(local: Path, plans, results, holdout: G.Holdout, lang) -> None:
    """Side information for analysis (not a data directory): lexicon, held-out combinations, key spans."""
    from ..fsutil import atomic_write_text

    local.mkdir(parents=True, exist_ok=True)
    atomic_write_text(local / lang.lexicon()[0], lang.lexicon()[1])
    word = lang.word  # canonical slot value -> one field in the language
    lines = []
    for which, pairs, single in (("test", holdout.test_pairs, holdout.test_single),
                                 ("dev", holdout.dev_pairs, holdout.dev_single)):
        for slots, held in pairs.items():
            for a, b in sorted(held):
                lines.append(f"{which} {slots[0]}{slots[1]} {word(slots[0], a)} {word(slots[1], b)}\n")
        for template, values in single.items():
            for v in sorted(values):
                lines.append(f"{which} {template} {word(G.SINGLE_SLOTS[template], v)}\n")
    atomic_write_text(local / "holdout.txt", "".join(lines))
    spans = []
    for name in ("train_img", "test_img", "test_img_noisy"):
        for job in plans[name]:
            span = results[job.utt_id].key_span
            if span:
                key = job.key_word.replace(" ", "_")  # one field (English keys are single words today)
                spans.append(f"{job.utt_id} {span[0]:.3f} {span[1]:.3f} {key} {int(job.drown)}\n")
    atomic_write_text(local / "key_spans.txt", "".join(sorted(spans)))
