"""The recipe schema: every key xllm reads, its type and its default, in one place.

A recipe (``recipes/*.yaml``, ``EXP/stageN/config.yaml``) is parsed once into a
:class:`Recipe`; code reads attributes (``recipe.model.cformer.ctc_weight``), never
``dict.get(key, default)``, so a default lives here and nowhere else. Unknown keys
and wrong types are refused with the key's dotted path before any work starts.
docs/config.md is generated from these classes (``xllm_cli.config.reference``).

The ``model:`` section depends on ``model.type``: the X-LLM family registers
:class:`ModelConfig` as ``xllm``; another family (a test's toy model, say) registers
its own dataclass with :func:`register_model_config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ..errors import XllmError
from .typed import check_partial, parse, to_dict

DataNames = list[str]  # data directories, relative to data.dir unless absolute


# ---------------------------------------------------------------- model


@dataclass
class LLMConfig:
    """The frozen causal LLM."""

    path: str | None = None  # HF directory or hub id; null = this experiment's stage-0 LM (EXP/stage0/llm)
    chat_template: bool | None = None  # null = the tokenizer's chat template when it has one; false = plain text prompt
    system_prompt: str | None = None  # null = the template's default system turn
    trust_remote_code: bool = False  # only honoured with --trust-remote-code on the command line
    align_speech_positions: bool = False  # speech vector k takes answer token k's position (stage-0 LMs only)


@dataclass
class LLMInitConfig:
    """Stage 0: a random-init causal LM with a char tokenizer built from the training text."""

    model_type: Literal["qwen2", "llama"] = "qwen2"  # architecture of the random-init LM
    hidden_size: int = 160  # embedding and hidden width
    num_layers: int = 3  # transformer layers
    num_heads: int = 4  # attention heads
    num_kv_heads: int | None = None  # null = num_heads
    intermediate_size: int | None = None  # null = 3 * hidden_size
    max_position_embeddings: int = 512  # longest sequence
    tie_word_embeddings: bool = True  # share input and output embeddings
    attention_dropout: float = 0.0  # dropout on attention weights
    stage0_tasks: dict[str, float] = field(  # mix of tasks: plain LM, copy the speech slot, copy with an image
        default_factory=lambda: {"lm": 0.2, "asr": 0.6, "image_asr": 0.2})
    stage0_noise: float = 0.0  # substitution rate in the copied slot


@dataclass
class SpeechEncoderConfig:
    """The speech encoder; ``type`` names an entry of the encoder registry (docs/extending.md)."""

    type: str = "conformer"  # an encoder of the registry: conformer, whisper, hubert, wav2vec2
    path: str | None = None  # pretrained encoders (whisper, hubert, wav2vec2): HF directory or hub id
    finetune: bool = False  # train a pretrained encoder in stage 1 (frozen otherwise)
    whisper_pad_to_30s: bool = False  # whisper: pad every input to 30 s as Whisper was trained; false = real length
    # Conformer trained from scratch:
    input_dim: int = 80  # fbank bins the Conformer reads
    subsampling: Literal[4, 6, 8] = 4  # frame-rate reduction of the Conv2d front end
    subsampling_channels: int | None = None  # Conv2d front-end channels; null = d_model
    d_model: int = 144  # Conformer width
    num_layers: int = 4  # Conformer blocks
    num_heads: int = 4  # attention heads
    ffn_dim: int | None = None  # null = 4 * d_model
    conv_kernel: int = 15  # depthwise convolution kernel
    dropout: float = 0.1  # dropout in the Conformer blocks


@dataclass
class CFormerConfig:
    """CIF + transformer layers: one vector per output token."""

    d_model: int | None = None  # null = the encoder's output size
    num_layers: int = 2  # transformer layers after the CIF
    num_heads: int = 4  # attention heads
    ffn_dim: int | None = None  # null = 4 * d_model
    dropout: float = 0.1  # dropout in the predictor and the layers
    conv_kernel: int = 3  # CIF weight predictor's Conv1d
    cif_threshold: float = 1.0  # accumulated weight at which the CIF fires a token
    tail_threshold: float = 0.5  # inference: a tail residue above this fires one last token
    quantity_weight: float = 1.0  # stage 1
    ctc_weight: float = 0.0  # stage 1: CTC on the encoder output (0 = no CTC head)
    stage2_quantity_weight: float = 0.1  # stages 2-3 while the C-Former trains
    vocab: Literal["full", "train_text"] = "full"  # classes: every LLM token, or only those in stage 1's training text


@dataclass
class AdapterConfig:
    """Interface output -> LLM embedding space."""

    type: Literal["linear", "mlp"] = "linear"  # linear, or a two-layer MLP
    hidden: int | None = None  # mlp hidden size; null = the LLM's hidden size


@dataclass
class VisionInitConfig:
    """A random-init CLIP vision tower (when vision_encoder.path is null)."""

    image_size: int | None = None  # null = vision_encoder.image_size
    patch_size: int = 8  # ViT patch size
    hidden_size: int = 64  # ViT width
    intermediate_size: int = 128  # ViT MLP width
    num_layers: int = 2  # ViT layers
    num_heads: int = 4  # attention heads


@dataclass
class VisionEncoderConfig:
    """The frozen image encoder (CLIP/SigLIP/ViT), or a tiny random one."""

    path: str | None = None  # HF directory or hub id; null = random-init tower from ``init``
    feature_layer: int = -1  # hidden layer whose patch features the Q-Former reads (-2 = penultimate)
    finetune: bool = False  # train a pretrained vision encoder in stage 1 (frozen otherwise)
    image_size: int | None = None  # random-init tower: input size (null = init.image_size, else 64)
    init: VisionInitConfig = field(default_factory=VisionInitConfig)  # the random-init tower's shape


@dataclass
class QFormerConfig:
    """BLIP-2 style Q-Former with learned queries, for images and video frames."""

    num_queries: int = 32  # learned queries per image
    num_video_queries: int | None = None  # null = num_queries
    hidden_size: int = 768  # Q-Former width
    num_layers: int = 12  # Q-Former layers
    num_heads: int = 12  # attention heads
    intermediate_size: int | None = None  # null = 4 * hidden_size
    cross_attention_frequency: int = 1  # a cross-attention to the vision features every N layers
    dropout: float = 0.1  # dropout in the Q-Former
    max_frames: int = 32  # video: learned frame embeddings (>= data.batch.num_frames)
    blip2_path: str | None = None  # a BLIP-2 checkpoint to initialise the Q-Former and queries from


@dataclass
class ITCConfig:
    """Stage 1 image-text contrastive head."""

    embed_dim: int = 128  # shared image-text embedding size
    temperature: float = 0.07  # softmax temperature of the contrastive loss


@dataclass
class ModelConfig:
    """``model:``: the X-LLM family (``type: xllm``)."""

    type: str = "xllm"  # the model family (training/family.py registry)
    dtype: str | None = None  # frozen parts' dtype (float32, bfloat16, float16); null = float32
    gradient_checkpointing: bool = False  # recompute the frozen LLM's layers in the backward pass (less memory)
    max_new_tokens: int = 64  # generation bound when no speech gives one
    llm: LLMConfig = field(default_factory=LLMConfig)  # the frozen causal LLM
    llm_init: LLMInitConfig | None = None  # stage 0 only
    speech_encoder: SpeechEncoderConfig | None = None  # null = no speech input
    cformer: CFormerConfig = field(default_factory=CFormerConfig)  # CIF + transformer layers
    speech_adapter: AdapterConfig = field(default_factory=AdapterConfig)  # C-Former output -> LLM embeddings
    vision_encoder: VisionEncoderConfig | None = None  # null = no image or video input
    qformer: QFormerConfig = field(default_factory=QFormerConfig)  # learned queries over the vision features
    image_adapter: AdapterConfig = field(default_factory=AdapterConfig)  # Q-Former output -> LLM embeddings (images)
    video_adapter: AdapterConfig = field(default_factory=AdapterConfig)  # Q-Former output -> LLM embeddings (video)
    itc: ITCConfig = field(default_factory=ITCConfig)  # stage 1 image-text contrastive head
    prompts: dict[str, str] = field(default_factory=dict)  # task -> instruction; merged over X-LLM's defaults


_MODEL_CONFIGS: dict[str, type] = {"xllm": ModelConfig}


def register_model_config(model_type: str, cls: type) -> None:
    """Let another model family (``model.type``) bring its own ``model:`` dataclass."""
    _MODEL_CONFIGS[model_type] = cls


def parse_model(data: Any, where: str = "model"):
    """``model:`` parsed by the dataclass its ``type`` registered."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise XllmError(f"{where}: expected a mapping of options, got {data!r}")
    kind = data.get("type", "xllm")
    cls = _MODEL_CONFIGS.get(kind)
    if cls is None:
        raise XllmError(f"{where}.type: unknown model type {kind!r} (known: {', '.join(sorted(_MODEL_CONFIGS))})")
    return parse(cls, data, where)


# ---------------------------------------------------------------- features and data


@dataclass
class FeaturesConfig:
    """``features:``: front end for encoders trained from scratch (pretrained ones bring their own)."""

    num_mel_bins: int | None = None  # null = speech_encoder.input_dim (fbank) or 80 (Whisper)
    frame_length_ms: float = 25.0  # fbank window
    frame_shift_ms: float = 10.0  # fbank hop
    dither: float = 0.0  # fbank dither (0 = deterministic features)
    normalize: bool = True  # waveform encoders: zero mean, unit variance per utterance
    cmvn_max_utts: int | None = None  # global CMVN from at most this many training utterances (null = all)


@dataclass
class SpecAugmentConfig:
    """SpecAugment masks (training only)."""

    enabled: bool = True  # false turns the masks off
    num_freq_masks: int = 2  # frequency masks per utterance
    freq_mask_width: int = 10  # each frequency mask is [0, F) bins wide
    num_time_masks: int = 2  # time masks per utterance
    time_mask_width: int = 40  # each time mask is [0, T) frames wide ...
    time_mask_ratio: float = 0.1  # ... and at most this fraction of the utterance


@dataclass
class BatchConfig:
    """``data.batch:`` (and ``stageN.batch:`` overrides): the data pipeline."""

    max_batch_seconds: float = 60.0  # audio seconds per batch, after speed perturbation
    max_batch_size: int = 0  # utterances per batch; 0 = no cap
    batch_size: int = 32  # text-only stage 0: utterances per batch
    min_duration: float = 0.0  # training: drop shorter utterances, fastest speed_perturb version (0 = no limit)
    max_duration: float = 0.0  # training: drop longer utterances, slowest speed_perturb version (0 = no limit)
    num_workers: int = 0  # DataLoader worker processes
    prefetch_factor: int = 2  # batches prepared ahead per worker
    pool_size: int = 2000  # utterances per shuffled pool sorted by length (0 = whole set)
    shuffle: bool = True  # training only
    speed_perturb: bool | list[float] = False  # true = [0.9, 1.0, 1.1]
    spec_augment: bool | SpecAugmentConfig = False  # true = defaults
    use_audio: bool = True  # compute speech features (false for image-caption batches)
    use_images: bool = True  # load image.scp images
    use_video: bool = True  # load video.scp frames
    num_frames: int = 8  # video frames sampled uniformly per clip, in training and decoding
    require_text: bool | None = None  # null = true in training
    pin_memory: bool = False  # page-locked batches for faster host-to-GPU copies (CUDA only)
    max_batch_chars: int = 4000  # text-only loader: characters per batch


@dataclass
class DataConfig:
    """``data:``."""

    dir: str = "data"  # data directory names in stage sections are relative to this
    batch: BatchConfig = field(default_factory=BatchConfig)  # data-pipeline options (below)


# ---------------------------------------------------------------- stages


@dataclass
class SplitData:
    """Train and dev data directories of one modality (stage 2)."""

    train: DataNames = field(default_factory=list)  # training data directories
    dev: DataNames = field(default_factory=list)  # dev data directories


@dataclass
class StageData:
    """``stageN.data:``."""

    train: DataNames = field(default_factory=list)  # training data directories
    dev: DataNames = field(default_factory=list)  # dev data directories (validation loss and CER)
    image_train: DataNames = field(default_factory=list)  # stage 1: image-text data for the Q-Former
    speech: SplitData | None = None  # stage 2: per modality (xllm train --stage 2 --modality ...)
    image: SplitData | None = None  # stage 2: image-text data
    video: SplitData | None = None  # stage 2: video-text data


@dataclass
class TrainOptions:
    """The optimiser and loop options of one stage (flat in ``stageN:``)."""

    epochs: int = 1  # passes over the training data
    max_steps: int | None = None  # stop after this many optimizer updates (also caps the schedule)
    lr: float = 1e-3  # peak learning rate (AdamW)
    weight_decay: float = 0.01  # AdamW weight decay
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW betas
    eps: float = 1e-8  # AdamW epsilon
    scheduler: Literal["cosine", "noam", "linear", "constant"] = "cosine"  # learning-rate schedule after warm-up
    warmup_steps: int = 0  # optimizer steps of linear warm-up
    min_lr_ratio: float = 0.0  # the schedule's floor, as a fraction of lr
    grad_clip: float = 5.0  # max global grad norm; 0 = off
    accum_grad: int = 1  # batches per optimizer step
    amp: Literal["auto", "bf16", "none"] = "auto"  # auto = bf16 on CUDA, none on CPU
    grad_checkpointing: bool = False  # recompute activations in the backward pass (less memory, more time)
    log_interval: int = 10  # optimizer steps between log lines / TensorBoard points
    valid_interval: int = 0  # optimizer steps between validations; 0 = each epoch's end
    keep_best: int = 3  # checkpoints kept by validation score (for xllm average)
    keep_last: int = 1  # most recent checkpoints kept besides the best (for resume)
    metric: Literal["loss", "cer"] = "loss"  # what picks the best checkpoints
    cer_utts: int = 0  # dev utterances decoded greedily at each validation (0 = no CER)
    find_unused_parameters: bool = True  # DDP: some batches touch only part of the model
    seed: int = 0

    def __post_parse__(self, where: str) -> None:
        if self.metric == "cer" and self.cer_utts <= 0:
            raise XllmError(f"{where}.metric: cer needs cer_utts > 0 (dev utterances to decode)")
        if self.accum_grad < 1:
            raise XllmError(f"{where}.accum_grad: must be >= 1")
        if self.epochs < 1 and self.max_steps is None:
            raise XllmError(f"{where}.epochs: must be >= 1")


@dataclass
class StageConfig(TrainOptions):
    """``stageN:``: trainer options plus what the stage reads and trains."""

    data: StageData = field(default_factory=StageData)  # what the stage reads (below)
    batch: dict[str, Any] = field(default_factory=dict)  # overrides of data.batch for this stage
    train_modules: list[str] | None = None  # stage 3: module groups that train (default: adapters)
    seed: int | None = None  # null = the recipe's top-level seed

    def __post_parse__(self, where: str) -> None:
        super().__post_parse__(where)
        self.batch = check_partial(BatchConfig, self.batch, f"{where}.batch")

    def train_options(self) -> TrainOptions:
        """The trainer's part of this section."""
        from dataclasses import fields

        return TrainOptions(**{f.name: getattr(self, f.name) for f in fields(TrainOptions)})


# ---------------------------------------------------------------- the recipe


@dataclass
class Recipe:
    """A whole recipe, as ``xllm train`` reads it and ``EXP/stageN/config.yaml`` keeps it."""

    seed: int = 0  # global seed; a stage's own seed overrides it
    model: Any = field(default_factory=ModelConfig)  # ModelConfig, or the dataclass of model.type
    features: FeaturesConfig = field(default_factory=FeaturesConfig)  # front-end options (below)
    data: DataConfig = field(default_factory=DataConfig)  # where the data directories are and how they are batched
    stage0: StageConfig | None = None  # stage 0: a small LM on text, only without a pretrained LLM
    stage1: StageConfig | None = None  # stage 1: each interface with its encoder (C-Former, Q-Former)
    stage2: StageConfig | None = None  # stage 2: one modality's interface aligned with the frozen LLM
    stage3: StageConfig | None = None  # stage 3: all modalities together

    def stage(self, n: int) -> StageConfig:
        """``stageN:``, which must be present."""
        section = getattr(self, f"stage{n}", None) if n in (0, 1, 2, 3) else None
        if section is None:
            raise XllmError(f"recipe: no stage{n}: section (needed for xllm train --stage {n})")
        return section

    def batch(self, n: int | None = None) -> BatchConfig:
        """Data-pipeline options in effect for stage ``n`` (``data.batch`` + ``stageN.batch``)."""
        section = getattr(self, f"stage{n}", None) if n is not None else None
        overrides = section.batch if section is not None else {}
        return parse(BatchConfig, {**to_dict(self.data.batch), **overrides}, f"stage{n}.batch")

    def to_dict(self) -> dict:
        return to_dict(self)


def parse_recipe(data: Any, source: str = "recipe") -> Recipe:
    """A typed recipe from the plain dict that ``load_recipe`` returns; errors name ``source``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise XllmError(f"{source}: a recipe must be a mapping")
    try:
        body = {k: v for k, v in data.items() if k != "model"}
        recipe = parse(Recipe, body, "")
        recipe.model = parse_model(data.get("model"), "model")
    except XllmError as e:
        raise XllmError(f"{source}: {e}") from None
    return recipe


def with_model(recipe: Recipe, model) -> Recipe:
    """A copy of ``recipe`` with another ``model:`` section."""
    return replace(recipe, model=model)
