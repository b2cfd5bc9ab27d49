"""C-Former: CIF predictor + N transformer layers + token classifier (+ CTC head on the encoder).

The C-Former turns encoder frames into one vector per LLM token ("quasi-language"). In
stage 1 it is trained as a non-autoregressive recognizer: CE of the classifier on the fired
tokens against the LLM tokenizer's ids, plus the CIF quantity loss (and optionally CTC on
the encoder output). Its layer outputs (not the logits) go to the speech adapter.

``cformer.vocab: train_text`` restricts the classes to the LLM token ids of stage 1's
training text (:meth:`CFormer.set_vocab`; the ids are the ``vocab_ids`` buffer, saved with
the weights) plus one last class for any other token. A 49k-token LLM vocabulary otherwise
costs a 49k-way classifier (and CTC softmax) per token, though a small corpus uses ~100 ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from xllm_cli.config.schema import CFormerConfig
from xllm_cli.models.cif import CifPredictor, cif, lengths_to_mask, quantity_loss
from xllm_cli.models.speech_encoders import sinusoidal_positions


@dataclass
class CFormerOutput:
    """What the C-Former hands to the speech adapter."""

    hidden: torch.Tensor  # (B, K, d) C-Former layer outputs, one per token
    token_lens: torch.Tensor  # (B,)
    alpha_sum: torch.Tensor  # (B,) unscaled sum of CIF weights


class CFormer(nn.Module):
    """CIF + transformer layers over the fired tokens + classifier over the LLM vocabulary (or a subset)."""

    def __init__(self, enc_dim: int, vocab_size: int, cfg: CFormerConfig):
        super().__init__()
        d = cfg.d_model or enc_dim  # null: the encoder's width (no input projection)
        self.d_model = d
        self.threshold = cfg.cif_threshold
        self.tail_threshold = cfg.tail_threshold
        self.predictor = CifPredictor(enc_dim, cfg.conv_kernel, cfg.dropout)
        self.in_proj = nn.Linear(enc_dim, d) if d != enc_dim else nn.Identity()
        layer = nn.TransformerEncoderLayer(
            d, cfg.num_heads, cfg.ffn_dim or 4 * d, cfg.dropout, batch_first=True, norm_first=True,
        )
        self.layers = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.enc_dim = enc_dim
        self.vocab_size = vocab_size  # the LLM's
        self.with_ctc = cfg.ctc_weight > 0
        if cfg.vocab == "train_text":
            self.set_vocab(torch.empty(0, dtype=torch.long))  # sized by fit or by the saved weights
        else:
            self.classifier = nn.Linear(d, vocab_size)
            # CTC on the encoder output; the blank is the extra last class
            self.ctc_head = nn.Linear(enc_dim, vocab_size + 1) if self.with_ctc else None
            self.vocab_ids: torch.Tensor | None = None  # class = LLM token id
        self.num_classes = self.classifier.out_features

    @property
    def restricted(self) -> bool:
        return self.vocab_ids is not None

    def set_vocab(self, ids: torch.Tensor) -> None:
        """Classes = the sorted LLM token ``ids`` + one for any other token; fresh classifier/CTC head."""
        ids = torch.unique(ids.long().cpu())  # sorted: classes() searches it
        like = next(self.predictor.parameters())
        old = getattr(self, "classifier", None)
        trainable = old.weight.requires_grad if old is not None else True
        self.register_buffer("vocab_ids", ids.to(like.device))
        k = len(ids) + 1
        self.classifier = nn.Linear(self.d_model, k).to(like.device)
        self.ctc_head = nn.Linear(self.enc_dim, k + 1).to(like.device) if self.with_ctc else None
        for m in (self.classifier, self.ctc_head):
            if m is not None:
                m.requires_grad_(trainable).train(self.training)
        self.num_classes = k

    def classes(self, ids: torch.Tensor) -> torch.Tensor:
        """LLM token ids -> class indices (-100 padding kept; ids outside the subset -> the last class)."""
        if self.vocab_ids is None:
            return ids
        v = self.vocab_ids
        other = torch.full_like(ids, len(v))
        if len(v):
            pos = torch.searchsorted(v, ids.clamp(min=0)).clamp(max=len(v) - 1)
            other = torch.where(v[pos] == ids, pos, other)
        return torch.where(ids == -100, ids, other)

    def token_ids(self, classes: list[int]) -> list[int]:
        """Class indices -> LLM token ids; the catch-all class has no token and is dropped."""
        if self.vocab_ids is None:
            return classes
        v = self.vocab_ids.tolist()
        return [v[c] for c in classes if c < len(v)]

    def forward(
        self, enc: torch.Tensor, enc_lens: torch.Tensor, target_lens: torch.Tensor | None = None
    ) -> CFormerOutput:
        """Encoder frames -> one vector per token. ``target_lens`` (training) scales CIF to fire exactly that many."""
        alphas = self.predictor(enc, enc_lens)
        out = cif(enc, alphas, enc_lens, target_lens, self.threshold, self.tail_threshold)
        x = self.in_proj(out.tokens)
        x = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device, x.dtype)
        mask = lengths_to_mask(out.token_lens.clamp(min=1), x.shape[1])  # a row with no token keeps one key
        x = self.layers(x, src_key_padding_mask=~mask)
        x = self.norm(x)
        x = x.masked_fill(~lengths_to_mask(out.token_lens, x.shape[1])[..., None], 0.0)
        return CFormerOutput(hidden=x, token_lens=out.token_lens, alpha_sum=out.alpha_sum)

    def losses(
        self,
        enc: torch.Tensor,
        enc_lens: torch.Tensor,
        targets: torch.Tensor,
        target_lens: torch.Tensor,
        ctc_weight: float = 0.0,
    ) -> tuple[CFormerOutput, dict[str, torch.Tensor]]:
        """Stage-1 losses: ``ce`` on the CIF tokens (targets (B,K) padded with -100), ``quantity``, ``ctc``."""
        out = self.forward(enc, enc_lens, target_lens)
        logits = self.classifier(out.hidden)
        targets = self.classes(targets)
        k = min(logits.shape[1], targets.shape[1])
        tgt = targets[:, :k].reshape(-1)
        if bool((tgt != -100).any()):
            ce = F.cross_entropy(logits[:, :k].reshape(-1, self.num_classes).float(), tgt, ignore_index=-100)
        else:  # only empty transcripts: nothing to classify (cross_entropy would be NaN)
            ce = logits.sum() * 0.0
        losses = {"ce": ce, "quantity": quantity_loss(out.alpha_sum, target_lens)}
        if self.ctc_head is not None and ctc_weight > 0:
            logp = F.log_softmax(self.ctc_head(enc).float(), dim=-1).transpose(0, 1)
            tgt = targets.clamp(min=0)
            losses["ctc"] = F.ctc_loss(
                logp, tgt, enc_lens, target_lens, blank=self.num_classes, reduction="sum", zero_infinity=True
            ) / target_lens.sum().clamp(min=1)  # per target token, on the scale of the CE
        return out, losses

    @torch.no_grad()
    def greedy_tokens(self, enc: torch.Tensor, enc_lens: torch.Tensor) -> list[list[int]]:
        """Non-autoregressive decoding: classifier argmax on the fired tokens (no CIF scaling)."""
        out = self.forward(enc, enc_lens)
        ids = self.classifier(out.hidden).argmax(-1)
        return [self.token_ids(ids[b, : int(out.token_lens[b])].tolist()) for b in range(ids.shape[0])]
