"""Image/video interfaces: Q-Former shapes, BLIP-2 weight loading, pretrained vision towers."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from xllm_cli.config.schema import QFormerConfig, VisionEncoderConfig
from xllm_cli.config.typed import parse
from xllm_cli.errors import XllmError
from xllm_cli.models.vision import QFormerInterface, TextEncoderITC, VisionEncoder

torch.set_num_threads(1)

def vision_cfg(d: dict) -> VisionEncoderConfig:
    return parse(VisionEncoderConfig, d, "vision_encoder")


def qformer_cfg(d: dict) -> QFormerConfig:
    return parse(QFormerConfig, d, "qformer")


QCFG = {"num_queries": 8, "num_video_queries": 4, "hidden_size": 32, "num_layers": 2, "num_heads": 4,
        "intermediate_size": 64, "max_frames": 8}


def test_image_and_video_shapes():
    torch.manual_seed(0)
    vis = VisionEncoder(vision_cfg({"image_size": 64, "init": {"patch_size": 8, "hidden_size": 48, "num_layers": 1, "num_heads": 4,
                                                    "intermediate_size": 64}}))
    assert not vis.pretrained and vis.output_dim == 48
    q = QFormerInterface(vis.output_dim, qformer_cfg(QCFG)).eval()
    feats = vis(torch.randn(3, 3, 64, 64))
    assert feats.shape == (3, 64 + 1, 48)  # 8x8 patches + CLS
    img = q.image(feats)
    assert img.shape == (3, 8, 32)
    frames = torch.randn(2, 5, 3, 64, 64)
    vid = q.video(vis(frames.reshape(10, 3, 64, 64)), 5)
    assert vid.shape == (2, 5 * 4, 32)
    # video uses its own queries: same frame features, different outputs than the image path
    one = vis(frames[0, :1])
    assert not torch.allclose(q.video(one, 1)[0], q.image(one)[0, :4])
    # frames are ordered in time: the per-frame embedding makes equal frames distinguishable
    with torch.no_grad():
        q.frame_embed.normal_()
    same = one.expand(2, -1, -1)
    v2 = q.video(same, 2)[0]
    assert not torch.allclose(v2[:4], v2[4:])
    with pytest.raises(XllmError):
        q.video(vis(torch.randn(9, 3, 64, 64)), 9)  # more frames than max_frames


def _fake_blip2(path: Path, vision_hidden: int = 40, num_queries: int = 6) -> dict:
    """A BLIP-2 checkpoint directory with config.json and only some of the tensors a real one has."""
    from safetensors.torch import save_file
    from transformers import Blip2Config
    from transformers.models.blip_2.modeling_blip_2 import Blip2QFormerModel

    cfg = Blip2Config(
        vision_config={"hidden_size": vision_hidden, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
        qformer_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                        "intermediate_size": 64, "cross_attention_frequency": 1},
        text_config={"model_type": "opt", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "ffn_dim": 32, "vocab_size": 50, "word_embed_proj_dim": 16},
        num_query_tokens=num_queries,
    )
    path.mkdir(parents=True)
    cfg.save_pretrained(str(path))
    torch.manual_seed(123)
    qf = Blip2QFormerModel(cfg.qformer_config)
    tensors = {f"qformer.{k}": v.clone() for k, v in qf.state_dict().items()}
    tensors["query_tokens"] = torch.randn(1, num_queries, 32)
    tensors["vision_model.embeddings.class_embedding"] = torch.randn(vision_hidden)  # must be ignored
    tensors["language_projection.weight"] = torch.randn(16, 32)  # must be ignored
    # split over two shards with an index, like real checkpoints
    keys = sorted(tensors)
    half = len(keys) // 2
    save_file({k: tensors[k] for k in keys[:half]}, str(path / "model-00001-of-00002.safetensors"))
    save_file({k: tensors[k] for k in keys[half:]}, str(path / "model-00002-of-00002.safetensors"))
    index = {"weight_map": {k: ("model-00001-of-00002.safetensors" if i < half else "model-00002-of-00002.safetensors")
                            for i, k in enumerate(keys)}}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    return tensors


def test_blip2_qformer_weights_load(tmp_path):
    tensors = _fake_blip2(tmp_path / "blip2", vision_hidden=40, num_queries=6)
    # our vision tower is 48 wide, BLIP-2's was 40: a trainable projection bridges them
    q = QFormerInterface(48, qformer_cfg({"blip2_path": str(tmp_path / "blip2"), "num_video_queries": 4}))
    assert q.num_queries == 6 and q.hidden_size == 32
    assert isinstance(q.vision_proj, torch.nn.Linear) and q.vision_proj.out_features == 40
    sd = q.qformer.state_dict()
    for k, v in tensors.items():
        if k.startswith("qformer."):
            torch.testing.assert_close(sd[k[len("qformer."):]], v)
    torch.testing.assert_close(q.query_tokens.data, tensors["query_tokens"])
    torch.testing.assert_close(q.video_query_tokens.data, tensors["query_tokens"][:, :4])
    assert q.image(torch.randn(2, 5, 48)).shape == (2, 6, 32)
    # same width: no projection
    q2 = QFormerInterface(40, qformer_cfg({"blip2_path": str(tmp_path / "blip2")}))
    assert isinstance(q2.vision_proj, torch.nn.Identity)
    with pytest.raises(XllmError):
        QFormerInterface(40, qformer_cfg({"blip2_path": str(tmp_path / "missing")}))


def test_pretrained_clip_vision_tower_from_full_clip_dir(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
                       "image_size": 32, "patch_size": 8},
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
                     "vocab_size": 50},
        projection_dim=16,
    ))
    clip.save_pretrained(str(tmp_path / "clip"))
    vis = VisionEncoder(vision_cfg({"path": str(tmp_path / "clip")}))
    assert vis.pretrained and vis.output_dim == 32 and vis.image_size == 32
    torch.testing.assert_close(
        vis.model.embeddings.patch_embedding.weight, clip.vision_model.embeddings.patch_embedding.weight
    )
    assert vis(torch.randn(2, 3, 32, 32)).shape == (2, 17, 32)


def test_itc_loss_prefers_matching_pairs():
    torch.manual_seed(0)
    itc = TextEncoderITC(vocab_size=20, query_dim=8, embed_dim=8)
    q = torch.randn(3, 4, 8, requires_grad=True)
    loss = itc.loss(q, [[1, 2], [3, 4], [5]], ["a", "b", "c"])
    loss.backward()
    assert torch.isfinite(loss) and q.grad.abs().sum() > 0 and itc.text_embed.weight.grad.abs().sum() > 0
    # duplicates of one text are positives of each other: two identical pairs give a lower loss bound
    dup = itc.loss(q.detach(), [[1, 2], [1, 2], [5]], ["a", "a", "c"])
    assert torch.isfinite(dup)


def _tiny_blip2_model(path: Path, num_queries: int = 4):
    """A whole random BLIP-2 (ViT + Q-Former + OPT) saved as transformers saves real ones."""
    from transformers import Blip2Config, Blip2Model

    cfg = Blip2Config(
        vision_config={"hidden_size": 48, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
        qformer_config={"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4,
                        "intermediate_size": 64, "cross_attention_frequency": 1, "encoder_hidden_size": 48},
        text_config={"model_type": "opt", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "ffn_dim": 32, "vocab_size": 50, "word_embed_proj_dim": 16},
        num_query_tokens=num_queries,
    )
    torch.manual_seed(7)
    model = Blip2Model(cfg).eval()
    model.save_pretrained(str(path))
    return model


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_blip2_checkpoint_as_vision_encoder_brings_its_qformer(tmp_path):
    """vision_encoder.path = a BLIP-2 dir: its ViT + Q-Former + queries load, the override is reported."""
    blip2 = _tiny_blip2_model(tmp_path / "blip2", num_queries=4)
    records = _Records()
    logging.getLogger("xllm").addHandler(records)
    try:
        enc = VisionEncoder(vision_cfg({"path": str(tmp_path / "blip2")}))
        q = QFormerInterface(enc.output_dim, qformer_cfg({"num_queries": 8, "hidden_size": 64}),
                             vision_blip2_dir=enc.blip2_dir)
    finally:
        logging.getLogger("xllm").removeHandler(records)
    assert type(enc.model).__name__ == "Blip2VisionModel" and enc.output_dim == 48 and enc.image_size == 32
    torch.testing.assert_close(enc.model.embeddings.patch_embedding.weight,
                               blip2.vision_model.embeddings.patch_embedding.weight)
    assert q.num_queries == 4 and q.hidden_size == 32 and isinstance(q.vision_proj, torch.nn.Identity)
    torch.testing.assert_close(q.query_tokens.data, blip2.query_tokens.data)
    sd = q.qformer.state_dict()
    for k, v in blip2.qformer.state_dict().items():
        torch.testing.assert_close(sd[k], v)
    text = "\n".join(records.messages)
    assert "qformer.num_queries: 8 in the config, 4 in the BLIP-2 checkpoint" in text
    assert "qformer.hidden_size: 64" in text
    assert "trained on BLIP-2's own ViT" not in text  # its own ViT: nothing to warn about
    pixels = torch.randn(2, 3, 32, 32)
    enc.eval(), q.eval()
    with torch.no_grad():
        out = q.image(enc(pixels))
    assert out.shape == (2, 4, 32)
    # the same queries output as BLIP-2's own forward (ViT last hidden state -> Q-Former)
    with torch.no_grad():
        vis = blip2.vision_model(pixel_values=pixels).last_hidden_state
        own = blip2.qformer(query_embeds=blip2.query_tokens.expand(2, -1, -1), encoder_hidden_states=vis)
    torch.testing.assert_close(out, own.last_hidden_state, atol=1e-5, rtol=1e-5)


def test_blip2_qformer_on_another_vision_encoder_is_warned(tmp_path):
    _fake_blip2(tmp_path / "blip2", vision_hidden=40, num_queries=6)
    records = _Records()
    logging.getLogger("xllm").addHandler(records)
    try:
        QFormerInterface(48, qformer_cfg({"blip2_path": str(tmp_path / "blip2"), "num_queries": 6,
                                          "hidden_size": 32, "num_layers": 2, "num_heads": 4,
                                          "intermediate_size": 64}))
    finally:
        logging.getLogger("xllm").removeHandler(records)
    text = "\n".join(records.messages)
    assert "new random 48->40 projection" in text and "num_queries" not in text
