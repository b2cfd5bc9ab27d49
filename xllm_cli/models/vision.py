"""Image and video interfaces: vision encoder + Q-Former (+ adapters, built in xllm.py).

- Vision encoder: CLIP / SigLIP vision tower or any AutoModel image encoder (ViT) from a local
  dir or hub id (frozen), BLIP-2's own ViT (``vision_model.*``) when the path is a BLIP-2
  checkpoint, or a random-init tiny CLIPVisionModel for the tiny preset (trained in stage 1,
  so its weights are saved with the model).
- Q-Former: transformers' ``Blip2QFormerModel`` cross-attending from learned queries to the
  vision features. BLIP-2 Q-Former weights (``qformer.*`` and ``query_tokens``) are read from
  ``qformer.blip2_path``, else from the vision encoder's checkpoint when that is a BLIP-2 one
  (X-LLM's set-up: BLIP-2's ViT + Q-Former + queries, as trained together). The checkpoint's
  Q-Former shape (and number of queries) replaces the config's, with a warning naming each
  overridden key. On another vision encoder a BLIP-2 Q-Former reads features it was not
  trained on, through a new (random) projection when the widths differ: also warned.
- Video: N uniformly sampled frames, each through the vision encoder and the Q-Former with
  SEPARATE video queries (plus a learned per-frame embedding), concatenated in time.
- Stage-1 image training: image-text contrastive loss against a small text encoder (mean of
  trainable token embeddings + linear) of the caption/transcript.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from xllm_cli.config.schema import QFormerConfig, VisionEncoderConfig
from xllm_cli.errors import XllmError


class VisionEncoder(nn.Module):
    """(B,3,H,W) pixels -> (B,P,H_v) patch features."""

    def __init__(self, cfg: VisionEncoderConfig):
        super().__init__()
        from transformers import AutoConfig, AutoModel, CLIPVisionConfig, CLIPVisionModel, SiglipVisionModel

        from xllm_cli.models.loading import resolve_pretrained

        self.feature_layer = cfg.feature_layer
        self.blip2_dir = None  # a BLIP-2 checkpoint whose ViT this is (its Q-Former belongs with it)
        if cfg.path:
            model_dir = resolve_pretrained(str(cfg.path))
            mt = AutoConfig.from_pretrained(str(model_dir)).model_type
            if mt in ("clip", "clip_vision_model"):
                self.model = CLIPVisionModel.from_pretrained(str(model_dir))
            elif mt in ("siglip", "siglip_vision_model"):
                self.model = SiglipVisionModel.from_pretrained(str(model_dir))
            elif mt == "blip-2":
                self.model = _blip2_vision_model(model_dir)
                self.blip2_dir = model_dir
            else:
                self.model = AutoModel.from_pretrained(str(model_dir))
            self.pretrained = True
        else:
            init = cfg.init
            vc = CLIPVisionConfig(
                image_size=cfg.image_size or init.image_size or 64,
                patch_size=init.patch_size,
                hidden_size=init.hidden_size,
                intermediate_size=init.intermediate_size,
                num_hidden_layers=init.num_layers,
                num_attention_heads=init.num_heads,
            )
            self.model = CLIPVisionModel(vc)
            self.pretrained = False
        vcfg = getattr(self.model.config, "vision_config", self.model.config)
        self.output_dim = int(vcfg.hidden_size)
        self.image_size = int(getattr(vcfg, "image_size", cfg.image_size or 224))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) -> (B,P,H_v) features of ``feature_layer``."""
        dtype = next(self.model.parameters()).dtype
        if self.feature_layer == -1:
            return self.model(pixel_values=pixels.to(dtype)).last_hidden_state
        out = self.model(pixel_values=pixels.to(dtype), output_hidden_states=True)
        return out.hidden_states[self.feature_layer]


def _blip2_vision_model(model_dir):
    """BLIP-2's ViT alone: ``vision_model.*`` of the checkpoint (the language model is never read)."""
    from transformers import Blip2Config
    from transformers.models.blip_2.modeling_blip_2 import Blip2VisionModel

    from xllm_cli.models.loading import load_prefixed_state_dict

    model = Blip2VisionModel(Blip2Config.from_pretrained(str(model_dir)).vision_config)
    sd = load_prefixed_state_dict(model_dir, ["vision_model."])
    if not sd:
        raise XllmError(f"{model_dir}: no vision_model.* tensors in the BLIP-2 checkpoint")
    missing, _ = model.load_state_dict(sd, strict=False)
    if missing:
        raise XllmError(f"{model_dir}: BLIP-2 vision tensors missing: {missing[:3]}")
    return model.eval()


# qformer.<key> -> the checkpoint's Q-Former config attribute that replaces it
_BLIP2_OVERRIDES = {"hidden_size": "hidden_size", "num_layers": "num_hidden_layers",
                    "num_heads": "num_attention_heads", "intermediate_size": "intermediate_size",
                    "cross_attention_frequency": "cross_attention_frequency"}


def _report_blip2_overrides(cfg: QFormerConfig, qcfg, num_queries: int, source) -> None:
    from xllm_cli.console import log

    pairs = [("num_queries", cfg.num_queries, num_queries)]
    pairs += [(k, getattr(cfg, k), getattr(qcfg, a)) for k, a in _BLIP2_OVERRIDES.items()]
    for key, ours, theirs in pairs:
        if ours is not None and ours != theirs:
            log.warning("qformer.%s: %s in the config, %s in the BLIP-2 checkpoint %s: using %s",
                        key, ours, theirs, source, theirs)


class QFormerInterface(nn.Module):
    """Q-Former with image queries and separate video queries."""

    def __init__(self, vision_dim: int, cfg: QFormerConfig, load_weights: bool = True, vision_blip2_dir=None):
        """``vision_blip2_dir``: the BLIP-2 checkpoint the vision encoder came from (its Q-Former is the default)."""
        super().__init__()
        from transformers import Blip2Config, Blip2QFormerConfig
        from transformers.models.blip_2.modeling_blip_2 import Blip2QFormerModel

        from xllm_cli.models.loading import resolve_pretrained

        blip2 = cfg.blip2_path or vision_blip2_dir
        num_queries = cfg.num_queries
        if blip2:
            blip2_dir = resolve_pretrained(str(blip2), ["*.json", "*.safetensors"])
            full = Blip2Config.from_pretrained(str(blip2_dir))
            qcfg = full.qformer_config
            num_queries = int(full.num_query_tokens)
            if load_weights:  # building from the checkpoint (a saved model's config already says so)
                _report_blip2_overrides(cfg, qcfg, num_queries, blip2)
                if vision_blip2_dir is None or Path(vision_blip2_dir).resolve() != Path(blip2_dir).resolve():
                    from xllm_cli.console import log

                    how = (f"through a new random {vision_dim}->{qcfg.encoder_hidden_size} projection"
                           if qcfg.encoder_hidden_size != vision_dim else "directly")
                    log.warning("qformer.blip2_path %s: its Q-Former was trained on BLIP-2's own ViT and reads "
                                "this vision encoder's features %s; set vision_encoder.path to the BLIP-2 "
                                "checkpoint to use its ViT", blip2, how)
        else:
            qcfg = Blip2QFormerConfig(
                hidden_size=cfg.hidden_size,
                num_hidden_layers=cfg.num_layers,
                num_attention_heads=cfg.num_heads,
                intermediate_size=cfg.intermediate_size or 4 * cfg.hidden_size,
                cross_attention_frequency=cfg.cross_attention_frequency,
                encoder_hidden_size=vision_dim,
                hidden_dropout_prob=cfg.dropout,
                attention_probs_dropout_prob=cfg.dropout,
            )
        self.hidden_size = int(qcfg.hidden_size)
        self.num_queries = num_queries
        self.num_video_queries = cfg.num_video_queries or num_queries
        self.vision_proj = (
            nn.Linear(vision_dim, qcfg.encoder_hidden_size) if qcfg.encoder_hidden_size != vision_dim else nn.Identity()
        )
        self.qformer = Blip2QFormerModel(qcfg)
        self.query_tokens = nn.Parameter(torch.randn(1, num_queries, self.hidden_size) * 0.02)
        self.video_query_tokens = nn.Parameter(torch.randn(1, self.num_video_queries, self.hidden_size) * 0.02)
        self.frame_embed = nn.Parameter(torch.zeros(cfg.max_frames, self.hidden_size))
        if blip2 and load_weights:
            self.load_blip2(blip2_dir)

    def load_blip2(self, blip2_dir) -> None:
        """Copy ``qformer.*`` and ``query_tokens`` from a BLIP-2 checkpoint (video queries start from them too)."""
        from xllm_cli.models.loading import load_prefixed_state_dict, load_tensor

        sd = load_prefixed_state_dict(blip2_dir, ["qformer."])
        if not sd:
            raise XllmError(f"{blip2_dir}: no qformer.* tensors in the BLIP-2 checkpoint")
        missing, unexpected = self.qformer.load_state_dict(sd, strict=False)
        if missing:
            raise XllmError(f"{blip2_dir}: BLIP-2 Q-Former tensors missing: {missing[:3]}")
        q = load_tensor(blip2_dir, ["query_tokens"])
        if q is None:
            raise XllmError(f"{blip2_dir}: no query_tokens in the BLIP-2 checkpoint")
        with torch.no_grad():
            self.query_tokens.copy_(q)
            n = min(self.num_video_queries, q.shape[1])
            self.video_query_tokens[:, :n].copy_(q[:, :n])

    def _run(self, feats: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        enc = self.vision_proj(feats.float())
        q = queries.expand(feats.shape[0], -1, -1)
        return self.qformer(query_embeds=q, encoder_hidden_states=enc).last_hidden_state

    def image(self, feats: torch.Tensor) -> torch.Tensor:
        """(B,P,H_v) vision features -> (B,Nq,Hq) query outputs."""
        return self._run(feats, self.query_tokens)

    def video(self, frame_feats: torch.Tensor, num_frames: int) -> torch.Tensor:
        """(B*N,P,H_v) frame features -> (B, N*Nvq, Hq): per-frame video-query outputs concatenated in time."""
        out = self._run(frame_feats, self.video_query_tokens)  # (B*N, Nvq, Hq)
        B = out.shape[0] // num_frames
        out = out.view(B, num_frames, self.num_video_queries, self.hidden_size)
        if num_frames > self.frame_embed.shape[0]:
            raise XllmError(f"video has {num_frames} frames, qformer.max_frames is {self.frame_embed.shape[0]}")
        out = out + self.frame_embed[:num_frames][None, :, None, :]
        return out.reshape(B, num_frames * self.num_video_queries, self.hidden_size)


class TextEncoderITC(nn.Module):
    """Image-text contrastive head: mean of token embeddings + linear vs mean of query outputs + linear."""

    def __init__(self, vocab_size: int, query_dim: int, embed_dim: int = 128, temperature: float = 0.07):
        super().__init__()
        self.text_embed = nn.Embedding(vocab_size, embed_dim)
        self.text_proj = nn.Linear(embed_dim, embed_dim)
        self.image_proj = nn.Linear(query_dim, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(torch.log(torch.tensor(1.0 / temperature)))))

    def loss(self, query_out: torch.Tensor, token_ids: list[list[int]], texts: list[str]) -> torch.Tensor:
        """Symmetric InfoNCE; utterances with the same text count as positives of each other."""
        device = query_out.device
        L = max(1, max(len(t) for t in token_ids))
        ids = torch.zeros(len(token_ids), L, dtype=torch.long, device=device)
        m = torch.zeros(len(token_ids), L, device=device)
        for i, t in enumerate(token_ids):
            if t:
                ids[i, : len(t)] = torch.tensor(t, device=device)
                m[i, : len(t)] = 1
        te = (self.text_embed(ids) * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1)
        te = F.normalize(self.text_proj(te), dim=-1)
        ie = F.normalize(self.image_proj(query_out.float().mean(1)), dim=-1)
        logits = self.logit_scale.exp().clamp(max=100) * ie @ te.t()
        same = torch.tensor([[a == b for b in texts] for a in texts], dtype=torch.float, device=device)
        target = same / same.sum(1, keepdim=True)
        return 0.5 * (
            torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
            + torch.sum(-target.t() * F.log_softmax(logits.t(), 1), 1).mean()
        )
