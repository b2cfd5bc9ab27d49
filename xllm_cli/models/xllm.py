"""The X-LLM model: frozen encoders + trainable X2L interfaces + a frozen causal LLM.

Module groups (the names ``stageN.train_modules`` and :meth:`XLLM.set_stage` take):
``llm``, ``speech_encoder``, ``cformer`` (CIF predictor + transformer layers), ``cformer_head``
(token classifier + CTC head), ``speech_adapter``, ``vision_encoder``, ``qformer`` (Q-Former +
image queries + vision projection), ``video_queries`` (video queries + frame embeddings),
``image_adapter``, ``video_adapter``, ``itc`` (stage-1 contrastive text encoder / projections).

This module is the mechanism (the groups, the losses, generation). Which groups a stage
trains is the X-LLM family's rule (:mod:`xllm_cli.training.xllm_family`, docs/architecture.md);
model directories are written and read by :mod:`xllm_cli.models.saved_model`.

At ~460 lines it is a little over the project's usual size: the forward paths of the
three training objectives (stage-1 NAR recogniser, LLM next-token loss, image-text
contrastive) share the encoders and the prompt layout, and read best side by side.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn as nn

from xllm_cli.config.schema import LLMInitConfig, ModelConfig, parse_model
from xllm_cli.data.batch import Batch
from xllm_cli.errors import XllmError
from xllm_cli.models.adapters import build_adapter
from xllm_cli.models.cformer import CFormer
from xllm_cli.models.config import DEFAULT_PROMPTS, default_prompt
from xllm_cli.models.generation import greedy_generate, hf_generate
from xllm_cli.models.lm_loss import labelled_lm_loss
from xllm_cli.models.llm import (PromptFormatter, assemble, load_llm, load_llm_vocabulary,
                                 mark_checkpointed_layers_training, resolve_dtype)
from xllm_cli.models.outputs import LLMInputs, StepOutput
from xllm_cli.models.speech_encoders import build_speech_encoder
from xllm_cli.models.stage0 import stage0_loss
from xllm_cli.models.vision import QFormerInterface, TextEncoderITC, VisionEncoder

GROUPS = (
    "llm", "speech_encoder", "cformer", "cformer_head", "speech_adapter",
    "vision_encoder", "qformer", "video_queries", "image_adapter", "video_adapter", "itc",
)
MODALITIES = ("speech", "image", "video")
# What a freshly built (or loaded) model leaves trainable: the inference set-up, stage 3's default.
ADAPTER_GROUPS = ("speech_adapter", "image_adapter", "video_adapter")
# state-dict prefixes of the groups that can come from pretrained paths
PRETRAINED_PREFIX = {"llm": "llm.", "speech_encoder": "speech_encoder.", "vision_encoder": "vision_encoder."}


class XLLM(nn.Module):
    """Speech (C-Former) / image / video (Q-Former) interfaces in front of a causal LLM."""

    def __init__(self, cfg: ModelConfig | dict, load_weights: bool = True, with_llm: bool = True):
        """``with_llm=False`` (stage 1) loads the LLM's tokenizer and config only: ``self.llm`` is None."""
        super().__init__()
        # A plain mapping (tests, benches, older callers) is checked against the schema once.
        self.cfg: ModelConfig = parse_model(cfg) if isinstance(cfg, dict) else copy.deepcopy(cfg)
        cfg = self.cfg
        if not cfg.llm.path:
            raise XllmError("model.llm.path is not set (for the tiny preset: the stage-0 LM directory EXP/stage0/llm)")
        if with_llm:
            self.llm, self.tokenizer = load_llm(cfg.llm.path, cfg.dtype, cfg.gradient_checkpointing,
                                                cfg.llm.trust_remote_code)
            hidden = self.llm.get_input_embeddings().weight.shape[1]
        else:
            self.llm = None
            self.tokenizer, hidden = load_llm_vocabulary(cfg.llm.path, cfg.llm.trust_remote_code)
        vocab = len(self.tokenizer)
        frozen_dtype = resolve_dtype(cfg.dtype)

        self.speech_encoder = self.cformer = self.speech_adapter = None
        if cfg.speech_encoder is not None:
            self.speech_encoder = build_speech_encoder(cfg.speech_encoder, load_weights=True)
            if self.speech_encoder.pretrained and frozen_dtype is not None:
                self.speech_encoder.to(frozen_dtype)
            self.cformer = CFormer(self.speech_encoder.output_dim, vocab, cfg.cformer)
            self.speech_adapter = build_adapter(cfg.speech_adapter, self.cformer.d_model, hidden)

        self.vision_encoder = self.qformer = self.image_adapter = self.video_adapter = self.itc = None
        if cfg.vision_encoder is not None:
            self.vision_encoder = VisionEncoder(cfg.vision_encoder)
            if self.vision_encoder.pretrained and frozen_dtype is not None:
                self.vision_encoder.to(frozen_dtype)
            self.qformer = QFormerInterface(self.vision_encoder.output_dim, cfg.qformer, load_weights,
                                            self.vision_encoder.blip2_dir)
            qd = self.qformer.hidden_size
            self.image_adapter = build_adapter(cfg.image_adapter, qd, hidden)
            self.video_adapter = build_adapter(cfg.video_adapter, qd, hidden)
            itc_vocab = vocab if self._cformer_vocab() is None else self.cformer.num_classes
            self.itc = TextEncoderITC(itc_vocab, qd, cfg.itc.embed_dim, cfg.itc.temperature)

        # tiny preset: speech vectors share the positions of the answer tokens (see llm.assemble)
        self.align_slot = "speech" if cfg.llm.align_speech_positions else None
        self.formatter = PromptFormatter(self.tokenizer, cfg.llm.chat_template, cfg.llm.system_prompt)
        self.prompts = {**DEFAULT_PROMPTS, **cfg.prompts}
        self.trained_pretrained: set[str] = set()  # pretrained groups that were ever trainable
        self.set_stage(3, set(MODALITIES), list(ADAPTER_GROUPS))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, model_cfg: ModelConfig | dict, load_weights: bool = True, with_llm: bool = True) -> "XLLM":
        """Build from the ``model:`` config section; pretrained parts load from their paths (no network if local)."""
        return cls(model_cfg, load_weights=load_weights, with_llm=with_llm)

    @property
    def device(self) -> torch.device:
        """Device of the trainable interfaces (where batches go)."""
        first = self.cformer if self.cformer is not None else self.llm if self.llm is not None else self
        return next(first.parameters()).device

    def _group_members(self, name: str) -> list[nn.Module | nn.Parameter]:
        """The modules (and bare parameters) of one module group; see the module docstring."""
        c, q = self.cformer, self.qformer
        groups = {
            "llm": [self.llm],
            "speech_encoder": [self.speech_encoder],
            "cformer": [c.predictor, c.in_proj, c.layers, c.norm] if c is not None else [],
            "cformer_head": [c.classifier, c.ctc_head] if c is not None else [],
            "speech_adapter": [self.speech_adapter],
            "vision_encoder": [self.vision_encoder],
            "qformer": [q.qformer, q.vision_proj, q.query_tokens] if q is not None else [],
            "video_queries": [q.video_query_tokens, q.frame_embed] if q is not None else [],
            "image_adapter": [self.image_adapter],
            "video_adapter": [self.video_adapter],
            "itc": [self.itc],
        }
        if name not in groups and name not in GROUPS:
            raise XllmError(f"train_modules: unknown module {name!r} (one of {', '.join(GROUPS)})")
        return [m for m in groups.get(name, []) if m is not None]

    def _group_params(self, name: str) -> list[nn.Parameter]:
        params: list[nn.Parameter] = []
        for m in self._group_members(name):
            params += [m] if isinstance(m, nn.Parameter) else list(m.parameters())
        return params

    def keep_saved_pretrained(self, weight_names) -> None:
        """Pretrained groups whose weights a saved model holds were trained by a stage: keep saving them."""
        for group, prefix in PRETRAINED_PREFIX.items():
            if self.is_pretrained(group) and any(k.startswith(prefix) for k in weight_names):
                self.trained_pretrained.add(group)

    def is_pretrained(self, group: str) -> bool:
        """True for groups loaded from a pretrained path (the LLM always is)."""
        if group == "llm":
            return True
        mod = getattr(self, group, None)
        return bool(getattr(mod, "pretrained", False))

    def set_stage(self, stage: int, modalities: set[str], train_modules: list[str]) -> None:
        """Train ``train_modules`` (group names) on ``modalities`` in ``stage``; freeze everything else.

        The per-stage defaults are the X-LLM family's (``XLLM_FAMILY.configure_stage``). A
        pretrained group made trainable is remembered, so that saved models keep its weights,
        and its parameters become float32 whatever ``model.dtype`` loaded them in.
        """
        self.stage = stage
        self.modalities = set(modalities)
        for p in self.parameters():
            p.requires_grad_(False)
        for name in train_modules:
            params = self._group_params(name)
            for p in params:
                p.requires_grad_(True)
                if p.is_floating_point() and p.dtype != torch.float32:
                    # a pretrained part loaded in model.dtype (bf16) that now trains: fp32 master
                    # weights (autocast does the bf16 compute); bf16 updates would round away
                    p.data = p.data.float()
            if params and self.is_pretrained(name):
                self.trained_pretrained.add(name)
        se = self.speech_encoder
        if se is not None and hasattr(se, "freeze_frontend"):
            se.freeze_frontend()  # the CNN front end of HuBERT/wav2vec2 stays frozen
        self.trainable_groups = [n for n in train_modules if self._group_params(n)]
        self.train(self.training)

    def train(self, mode: bool = True):
        """Frozen groups stay in eval mode while training: no dropout, fixed norms, as at inference.

        That covers the pretrained encoders and LLM, and parts trained in an earlier stage and
        frozen in this one (the tiny preset's Conformer and C-Former in stages 2-3). Layers with
        gradient checkpointing on keep ``training`` set on the layer object alone, which is what
        transformers checks before recomputing; their sub-modules stay in eval.
        """
        super().train(mode)
        if mode:
            for name in GROUPS:
                params = self._group_params(name)
                if params and not any(p.requires_grad for p in params):
                    for m in self._group_members(name):
                        if isinstance(m, nn.Module):
                            m.eval()
                            # gradient checkpointing still needs the layer flags (dropout stays off)
                            mark_checkpointed_layers_training(m, True)
        return self

    # ------------------------------------------------------------------ C-Former vocabulary subset
    def _cformer_vocab(self) -> torch.Tensor | None:
        """The C-Former's class -> LLM id map (``cformer.vocab: train_text``); None: the full vocabulary."""
        return self.cformer.vocab_ids if self.cformer is not None else None

    def fit_cformer_vocab(self, texts) -> int | None:
        """``cformer.vocab: train_text``: the C-Former's classes (and the ITC text embedding) become the
        token ids of ``texts``, stage 1's training text. Returns their number (None: full vocabulary)."""
        if self._cformer_vocab() is None:
            return None
        ids = sorted({i for t in self._text_ids(list(texts)) for i in t})
        self._set_cformer_vocab(torch.tensor(ids, dtype=torch.long))
        return len(ids)

    def adopt_saved_shapes(self, state) -> None:
        """Before loading ``state``: size the subset classes as its saved ``cformer.vocab_ids`` say."""
        ids, own = state.get("cformer.vocab_ids"), self._cformer_vocab()
        if ids is not None and own is not None and ids.shape != own.shape:
            self._set_cformer_vocab(ids)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self.adopt_saved_shapes(state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _set_cformer_vocab(self, ids: torch.Tensor) -> None:
        self.cformer.set_vocab(ids)
        if self.itc is not None:  # same classes; its embedding is as trainable as before
            old = self.itc.text_embed
            self.itc.text_embed = nn.Embedding(self.cformer.num_classes, old.embedding_dim).to(old.weight.device)
            self.itc.text_embed.weight.requires_grad_(old.weight.requires_grad)

    def _class_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids of ``texts`` as C-Former classes (the LLM ids themselves with the full vocabulary)."""
        ids = self._text_ids(texts)
        if self._cformer_vocab() is None:
            return ids
        return [self.cformer.classes(torch.tensor(t, dtype=torch.long)).tolist() for t in ids]

    # ------------------------------------------------------------------ pieces
    def _text_ids(self, texts: list[str]) -> list[list[int]]:
        return [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]

    def _encode_speech(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        if self.speech_encoder is None:
            raise XllmError("this model has no speech encoder (model.speech_encoder is not set)")
        enc, lens = self.speech_encoder(batch.feats, batch.feat_lens)
        return enc.float(), lens

    def _image_queries(self, images: torch.Tensor) -> torch.Tensor:
        return self.qformer.image(self.vision_encoder(images))

    def _video_queries(self, videos: torch.Tensor) -> torch.Tensor:
        B, N = videos.shape[:2]
        feats = self.vision_encoder(videos.reshape(B * N, *videos.shape[2:]))
        return self.qformer.video(feats, N)

    @staticmethod
    def _padded(ids: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
        L = max(1, max(len(i) for i in ids))
        t = torch.full((len(ids), L), -100, dtype=torch.long, device=device)
        for b, i in enumerate(ids):
            if i:
                t[b, : len(i)] = torch.tensor(i, device=device)
        return t, torch.tensor([len(i) for i in ids], dtype=torch.long, device=device)

    # ------------------------------------------------------------------ training
    def forward(self, batch: Batch, stage: int | None = None) -> StepOutput:
        """Loss of one batch for ``stage`` (default: the configured stage)."""
        stage = self.stage if stage is None else stage
        if stage != 1 and self.llm is None:
            raise XllmError(f"stage {stage} needs the LLM: this model was built without it (stage 1 only)")
        if stage == 0:
            return self._lm_step(batch)
        if batch.texts is None:
            raise XllmError("training batches need texts")
        if stage == 1:
            return self._stage1_step(batch)
        return self._llm_step(batch)

    def _lm_step(self, batch: Batch) -> StepOutput:
        """Stage 0 on the LLM inside the model: the one stage-0 objective (:mod:`xllm_cli.models.stage0`)."""
        return stage0_loss(self.llm, self.tokenizer, self.formatter, self.prompts, self.align_slot,
                           self.cfg.llm_init or LLMInitConfig(), batch.texts)

    def _stage1_step(self, batch: Batch) -> StepOutput:
        cf = self.cfg.cformer
        total = None
        logs: dict[str, float] = {}
        if "speech" in self.modalities and batch.feats is not None and self.cformer is not None:
            enc, enc_lens = self._encode_speech(batch)
            targets, tlens = self._padded(self._text_ids(batch.texts), enc.device)
            ctc_w = cf.ctc_weight
            out, ls = self.cformer.losses(enc, enc_lens, targets, tlens, ctc_w)
            total = ls["ce"] + cf.quantity_weight * ls["quantity"]
            if "ctc" in ls:
                total = total + ctc_w * ls["ctc"]
            logs.update({f"cif_{k}": float(v.detach()) for k, v in ls.items()})
        img = self._present(batch.images, batch.image_mask)
        if self.modalities & {"image", "video"} and img is not None and self.qformer is not None:
            sel = img.nonzero().flatten().tolist()
            q = self._image_queries(batch.images[img])
            texts = [batch.texts[i] for i in sel]
            itc = self.itc.loss(q, self._class_ids(texts), texts)
            total = itc if total is None else total + itc
            logs["itc"] = float(itc.detach())
        if total is None:
            raise XllmError("stage 1: the batch has no data for the configured modality")
        logs["loss"] = float(total.detach())
        return StepOutput(total, logs)

    @staticmethod
    def _present(x: torch.Tensor | None, mask: torch.Tensor | None) -> torch.Tensor | None:
        if x is None:
            return None
        m = mask if mask is not None else torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        return m.bool() if bool(m.any()) else None

    def _modality_inputs(self, batch: Batch, use: set[str], target_lens: torch.Tensor | None):
        """Per-utterance LLM-space embeddings of the modalities in ``use``; plus extra losses."""
        B = len(batch)
        per_utt: list[dict[str, torch.Tensor]] = [{} for _ in range(B)]
        extra: dict[str, torch.Tensor] = {}
        info: dict[str, torch.Tensor] = {}
        if "speech" in use and batch.feats is not None and self.speech_encoder is not None:
            enc, enc_lens = self._encode_speech(batch)
            out = self.cformer(enc, enc_lens, target_lens)
            emb = self.speech_adapter(out.hidden)
            for b in range(B):
                per_utt[b]["speech"] = emb[b, : int(out.token_lens[b])]
            info["speech_tokens"] = out.token_lens
            if target_lens is not None:
                from xllm_cli.models.cif import quantity_loss

                extra["quantity"] = quantity_loss(out.alpha_sum, target_lens)
        if "image" in use and self.qformer is not None:
            img = self._present(batch.images, batch.image_mask)
            if img is not None:
                emb = self.image_adapter(self._image_queries(batch.images[img]))
                for j, b in enumerate(img.nonzero().flatten().tolist()):
                    per_utt[b]["image"] = emb[j]
        if "video" in use and self.qformer is not None:
            vid = self._present(batch.videos, batch.video_mask)
            if vid is not None:
                emb = self.video_adapter(self._video_queries(batch.videos[vid]))
                for j, b in enumerate(vid.nonzero().flatten().tolist()):
                    per_utt[b]["video"] = emb[j]
        return per_utt, extra, info

    def _layouts(self, batch: Batch, per_utt: list[dict]) -> list:
        layouts = []
        for b, mods in enumerate(per_utt):
            given = batch.prompts[b] if batch.prompts is not None else None
            prompt = given if given is not None else default_prompt(
                self.prompts, "speech" in mods, "image" in mods, "video" in mods
            )
            layouts.append(self.formatter.layout(prompt, tuple(m for m in ("image", "video", "speech") if m in mods)))
        return layouts

    def _llm_step(self, batch: Batch) -> StepOutput:
        ids = self._text_ids(batch.texts)
        use = self.modalities
        device = self.device
        tlens = torch.tensor([len(i) for i in ids], dtype=torch.long, device=device) if self.training else None
        per_utt, extra, _ = self._modality_inputs(batch, use, tlens)
        # utterances that bring none of the trained modalities are left out (nothing to align)
        keep = [b for b, mods in enumerate(per_utt) if mods]
        if not keep:
            raise XllmError(f"stage {self.stage}: the batch has no data for the configured modalities {sorted(use)}")
        layouts = self._layouts(batch, per_utt)
        targets = [self.formatter.target_ids(batch.texts[b]) for b in keep]
        embed = self.llm.get_input_embeddings()
        emb, mask, labels, pos = assemble(
            embed, [layouts[b] for b in keep], [per_utt[b] for b in keep], targets, False,
            embed.weight.device, embed.weight.dtype, self.align_slot,
        )
        lm = labelled_lm_loss(self.llm, emb, mask, pos, labels)  # vocabulary logits at labelled positions only
        loss = lm.loss
        logs = {"llm_ce": float(loss.detach()), "acc": lm.correct / lm.count if lm.count else 0.0}
        if "quantity" in extra and any(p.requires_grad for p in self.cformer.predictor.parameters()):
            w = self.cfg.cformer.stage2_quantity_weight
            loss = loss + w * extra["quantity"]
            logs["cif_quantity"] = float(extra["quantity"].detach())
        logs["loss"] = float(loss.detach())
        return StepOutput(loss, logs)

    # ------------------------------------------------------------------ decoding
    @torch.no_grad()
    def llm_inputs(self, batch: Batch, use_image: bool = True, use_video: bool = True,
                   use_speech: bool = True) -> LLMInputs:
        """Run the encoders and interfaces and assemble the left-padded prompts (generation's first half)."""
        batch = batch.to(self.device)
        use = {m for m, on in (("speech", use_speech), ("image", use_image), ("video", use_video)) if on}
        per_utt, _, info = self._modality_inputs(batch, use, None)
        embed = self.llm.get_input_embeddings()
        emb, mask, _, pos = assemble(
            embed, self._layouts(batch, per_utt), per_utt, None, True, embed.weight.device, embed.weight.dtype,
            self.align_slot,
        )
        speech_tokens = info["speech_tokens"].tolist() if "speech_tokens" in info else None
        return LLMInputs(emb, mask, pos, speech_tokens)

    @torch.no_grad()
    def generate(
        self,
        batch: Batch,
        max_new_tokens: int | list[int] | None = None,
        num_beams: int = 1,
        num_return_sequences: int = 1,
        use_image: bool = True,
        use_video: bool = True,
        use_speech: bool = True,
        repetition_penalty: float = 1.0,
        length_penalty: float = 1.0,
    ) -> list[list[tuple[str, float]]]:
        """Batched decoding with the LLM on left-padded soft prompts; n-best (text, score) per utterance.

        ``max_new_tokens`` is one bound for the batch or one per utterance (so that an utterance's
        result does not depend on the batch it was decoded in). The score is the length-normalised
        log-probability of the hypothesis (beam search's ``sequences_scores``; for greedy, the mean
        token log-probability). Greedy decoding runs the lean loop of ``models.generation``; beam
        search (and a repetition penalty) runs ``transformers``' ``generate``, with the sampling
        settings that instruct models ship overridden: decoding is deterministic, and
        repetition_penalty defaults to 1.0 because transcripts legitimately repeat characters.
        """
        inputs = self.llm_inputs(batch, use_image, use_video, use_speech)
        emb, mask, pos = inputs.embeds, inputs.attention_mask, inputs.position_ids
        limits = self._token_limits(max_new_tokens, len(inputs), inputs.speech_tokens)
        eos = self.tokenizer.eos_token_id
        gen_eos = getattr(self.llm.generation_config, "eos_token_id", None)
        eos_ids = sorted({eos, *(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])})
        if num_beams == 1 and repetition_penalty == 1.0:
            result = greedy_generate(self.llm, emb, mask, pos, limits, eos_ids)
            texts = [self.tokenizer.decode(t, skip_special_tokens=True).strip() for t in result.tokens]
            return [[(text, score)] for text, score in zip(texts, result.scores)]
        return hf_generate(self.llm, self.tokenizer, inputs, limits, eos_ids, num_beams, num_return_sequences,
                           repetition_penalty, length_penalty, aligned=bool(self.align_slot))

    def _token_limits(self, max_new_tokens: int | list[int] | None, batch_size: int,
                      speech_tokens: list[int] | None) -> list[int]:
        """One generation bound per utterance: given, else twice the fired speech tokens + 10."""
        if isinstance(max_new_tokens, (list, tuple)):
            if len(max_new_tokens) != batch_size:
                raise XllmError(f"{len(max_new_tokens)} token limits for a batch of {batch_size}")
            return [int(n) for n in max_new_tokens]
        if max_new_tokens is not None:
            return [int(max_new_tokens)] * batch_size
        if speech_tokens is not None:
            return [2 * int(n) + 10 for n in speech_tokens]
        return [self.cfg.max_new_tokens] * batch_size

    @torch.no_grad()
    def nar_decode(self, batch: Batch) -> list[str]:
        """First-pass hypotheses: C-Former classifier argmax on the fired CIF tokens (no LLM)."""
        batch = batch.to(self.device)
        enc, lens = self._encode_speech(batch)
        ids = self.cformer.greedy_tokens(enc, lens)
        return [self.tokenizer.decode(i, skip_special_tokens=True).strip() for i in ids]

    def save_llm(self, out_dir: str | Path) -> None:
        """Write the LLM + tokenizer as an HF directory (stage 0's EXP/stage0/llm)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.llm.save_pretrained(str(out_dir))
        self.tokenizer.save_pretrained(str(out_dir))
