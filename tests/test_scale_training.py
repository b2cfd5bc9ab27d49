"""What breaks at real scale in training: checkpointing, fp32 master weights, stage 1 without the LLM,
logits at labelled positions only (issue 10). The tiny preset stands in for the 7B ones."""

from __future__ import annotations

import copy

import pytest
import torch

from test_models import cfg, make_batch  # noqa: F401  (the module-scoped tiny-model fixture)
from xllm_cli.config.schema import parse_model
from xllm_cli.models.step_probe import probe_step
from xllm_cli.models.xllm import XLLM
from xllm_cli.training.xllm_family import XLLM_FAMILY

torch.set_num_threads(1)


def _stage2(c: dict, checkpointing: bool) -> XLLM:
    c = copy.deepcopy(c)
    c["gradient_checkpointing"] = checkpointing
    c["vision_encoder"] = None
    torch.manual_seed(0)
    model = XLLM.from_config(c)
    XLLM_FAMILY.configure_stage(model, 2, "speech")
    return model.train()


def _step(model: XLLM, batch) -> tuple[float, int, int]:
    """(loss, LLM attention calls in forward + backward, bytes of activations saved for backward)."""
    torch.manual_seed(1)
    p = probe_step(model, list(model.llm.base_model.layers), lambda: model(batch, 2).loss)
    return p.loss, p.layer_calls, p.saved_bytes


def test_gradient_checkpointing_recomputes_the_frozen_llm_in_stage2(cfg):  # noqa: F811
    """model.gradient_checkpointing on a frozen (eval-mode) LLM: layers recompute, dropout stays off."""
    batch = make_batch(3, images=False, video=False)
    plain, ckpt = _stage2(cfg, False), _stage2(cfg, True)
    layers = len(ckpt.llm.base_model.layers)
    loss0, calls0, saved0 = _step(plain, batch)
    loss1, calls1, saved1 = _step(ckpt, batch)
    assert calls0 == layers and calls1 == 2 * layers  # every layer ran again in backward
    assert saved1 < saved0 / 2  # the LLM's activations are no longer kept
    assert loss1 == pytest.approx(loss0, abs=1e-6)
    layer = ckpt.llm.base_model.layers[0]
    assert layer.training and not layer.self_attn.training and not ckpt.llm.training  # no dropout
    torch.testing.assert_close(ckpt.speech_adapter[0].weight.grad, plain.speech_adapter[0].weight.grad)
    ckpt.eval()
    assert not layer.training


def test_labelled_positions_loss_equals_the_full_vocabulary_loss(cfg):  # noqa: F811
    """Stages 2-3 apply the LM head to labelled positions only; the loss is the full computation's."""
    model = _stage2(cfg, False)
    batch = make_batch(3, images=False, video=False)
    rows = []
    model.llm.get_output_embeddings().register_forward_pre_hook(lambda m, a: rows.append(a[0].shape))
    torch.manual_seed(1)
    out = model(batch, 2)
    n_labels = sum(len(model.formatter.target_ids(t)) for t in batch.texts)
    assert rows == [torch.Size([n_labels, model.llm.config.hidden_size])]  # not (B, L, H)
    # the same inputs through transformers' own loss on full logits
    from xllm_cli.models.lm_loss import labelled_lm_loss

    captured = {}
    real = labelled_lm_loss

    def spy(llm, emb, mask, pos, labels):
        captured.update(emb=emb.detach(), mask=mask, pos=pos, labels=labels)
        return real(llm, emb, mask, pos, labels)

    import xllm_cli.models.xllm as xllm_mod

    xllm_mod.labelled_lm_loss, saved = spy, xllm_mod.labelled_lm_loss
    try:
        torch.manual_seed(1)
        again = model(batch, 2)
    finally:
        xllm_mod.labelled_lm_loss = saved
    assert float(again.loss.detach()) == float(out.loss.detach())
    full = model.llm(inputs_embeds=captured["emb"], attention_mask=captured["mask"], position_ids=captured["pos"],
                     labels=captured["labels"])
    lab = real(model.llm, captured["emb"], captured["mask"], captured["pos"], captured["labels"])
    torch.testing.assert_close(lab.loss, full.loss, atol=1e-6, rtol=1e-6)
    pred = full.logits[:, :-1].argmax(-1)
    gold = captured["labels"][:, 1:]
    assert lab.correct == int((pred[gold != -100] == gold[gold != -100]).sum()) and lab.count == n_labels


def _tiny_whisper_dir(path):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    wc = WhisperConfig(d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                       decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80,
                       max_source_positions=1500, max_target_positions=32, vocab_size=100, pad_token_id=1,
                       bos_token_id=2, eos_token_id=3, decoder_start_token_id=2, suppress_tokens=None,
                       begin_suppress_tokens=None)
    WhisperForConditionalGeneration(wc).save_pretrained(str(path))
    return path


def test_finetuned_pretrained_encoder_trains_fp32_master_weights(cfg, tmp_path):  # noqa: F811
    """dtype bfloat16 + speech_encoder.finetune: the encoder trains in fp32, the frozen LLM stays bf16."""
    c = copy.deepcopy(cfg)
    c.update(dtype="bfloat16", vision_encoder=None)
    c["speech_encoder"] = {"type": "whisper", "path": str(_tiny_whisper_dir(tmp_path / "whisper")), "finetune": True}
    model = XLLM.from_config(c)
    assert model.speech_encoder.encoder.conv1.weight.dtype == torch.bfloat16  # frozen until a stage trains it
    XLLM_FAMILY.configure_stage(model, 1, "speech")
    assert "speech_encoder" in model.trainable_groups
    trainable = [(n, p.dtype) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(d == torch.float32 for _, d in trainable), [t for t in trainable if t[1] != torch.float32]
    assert model.llm.get_input_embeddings().weight.dtype == torch.bfloat16
    g = torch.Generator().manual_seed(0)
    from xllm_cli.data.batch import Batch

    batch = Batch(utt_ids=["a", "b"], feats=torch.randn(2, 120, 80, generator=g), feat_lens=torch.tensor([120, 90]),
                  texts=["你好世界", "猫在桌子上"])
    model.train()
    model(batch, 1).loss.backward()
    assert model.speech_encoder.encoder.conv1.weight.grad.dtype == torch.float32


def test_stage1_model_has_no_llm_and_the_same_numerics(cfg, monkeypatch):  # noqa: F811
    """Stage 1 loads the LLM's tokenizer only; its C-Former (vocabulary from that tokenizer) is unchanged."""
    import xllm_cli.models.xllm as xllm_mod

    assert not XLLM_FAMILY.needs_llm(1, None) and XLLM_FAMILY.needs_llm(1, ["llm"]) and XLLM_FAMILY.needs_llm(2, None)
    model_cfg = parse_model(cfg)
    torch.manual_seed(0)
    full = XLLM_FAMILY.build_model(model_cfg, None)

    def refuse(*a, **k):
        raise AssertionError("stage 1 loaded the LLM's weights")

    monkeypatch.setattr(xllm_mod, "load_llm", refuse)
    torch.manual_seed(0)
    lean = XLLM_FAMILY.build_model(model_cfg, None, with_llm=False)
    assert lean.llm is None and lean.cformer.vocab_size == len(full.tokenizer)
    assert lean.speech_adapter[0].in_features == full.speech_adapter[0].in_features
    assert lean.image_adapter[-1].out_features == full.llm.get_input_embeddings().weight.shape[1]
    own = {k: v for k, v in full.state_dict().items() if not k.startswith("llm.")}
    assert own.keys() == lean.state_dict().keys()
    for k, v in lean.state_dict().items():
        assert torch.equal(v, own[k]), k
    losses = []
    for m in (full, lean):
        XLLM_FAMILY.configure_stage(m, 1, "all")
        m.train()
        torch.manual_seed(3)
        losses.append(m(make_batch(4), 1))
    assert float(losses[0].loss.detach()) == float(losses[1].loss.detach()) and losses[0].logs == losses[1].logs
    with pytest.raises(Exception, match="needs the LLM"):
        lean(make_batch(2), 2)


def test_stage1_training_never_loads_the_llm(tmp_path, monkeypatch):
    """`xllm train --stage 1` on the (shrunk) tiny recipe: the stage-0 LM's weights are never read."""
    from test_train_cli import REPO, SHRUNK_TINY, _synthetic_corpus
    from xllm_cli.main import run
    import xllm_cli.models.xllm as xllm_mod

    _synthetic_corpus(tmp_path)
    monkeypatch.chdir(tmp_path)
    small = [*SHRUNK_TINY, "stage0.epochs=1", "stage1.epochs=1", "stage1.cer_utts=2"]
    sets = [arg for s in small for arg in ("--set", s)]
    args = ["--config", str(REPO / "recipes" / "tiny.yaml"), "--exp", "exp", "--device", "cpu", *sets]
    run(["train", "--stage", "0", *args])
    loads = []
    real = xllm_mod.load_llm
    monkeypatch.setattr(xllm_mod, "load_llm", lambda *a, **k: loads.append(a) or real(*a, **k))
    run(["train", "--stage", "1", *args])
    assert (tmp_path / "exp" / "stage1" / "DONE").is_file()
    assert loads == []
    from xllm_cli.models.saved_model import load_model

    saved = load_model(tmp_path / "exp" / "stage1" / "best")  # a stage-1 model still loads whole for decoding
    assert saved.llm is not None and loads
