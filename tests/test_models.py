"""XLLM with the tiny preset: stages 0-3, generation, save/load, prompts and chat template."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

from xllm_cli.data.batch import Batch
from xllm_cli.config.schema import LLMInitConfig, parse_model
from xllm_cli.config.typed import parse
from xllm_cli.models.tiny_llm import create_tiny_llm
from xllm_cli.models.saved_model import load_model, save_model
from xllm_cli.models.xllm import XLLM
from xllm_cli.training.xllm_family import XLLM_FAMILY

torch.set_num_threads(1)

PRESET = Path(__file__).resolve().parents[1] / "recipes" / "model" / "tiny.yaml"
TEXTS = ["你好世界", "今天天气很好", "我爱北京天安门", "猫在桌子上", "红色的苹果"]


@pytest.fixture(scope="module")
def cfg(tmp_path_factory) -> dict:
    model_cfg = yaml.safe_load(PRESET.read_text(encoding="utf-8"))["model"]
    # smaller than the preset to keep the file fast; same structure
    model_cfg["speech_encoder"].update(d_model=64, num_layers=2, ffn_dim=128)
    model_cfg["cformer"].update(d_model=64, num_layers=1, ffn_dim=128)
    model_cfg["llm_init"].update(hidden_size=64, num_layers=2, intermediate_size=128)
    llm_dir = tmp_path_factory.mktemp("llm")
    torch.manual_seed(0)
    create_tiny_llm(parse(LLMInitConfig, model_cfg["llm_init"]), TEXTS, llm_dir)
    model_cfg["llm"]["path"] = str(llm_dir)
    return model_cfg


def make_batch(n: int, seed: int = 0, images: bool = True, video: bool = True, prompts=None) -> Batch:
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(60, 160, (n,), generator=g)
    lens[0] = 160
    feats = torch.randn(n, 160, 80, generator=g)
    feats = feats * (torch.arange(160)[None, :, None] < lens[:, None, None])
    return Batch(
        utt_ids=[f"u{i:03d}" for i in range(n)],
        feats=feats,
        feat_lens=lens,
        texts=[TEXTS[i % len(TEXTS)] for i in range(n)],
        prompts=prompts,
        images=torch.randn(n, 3, 64, 64, generator=g) if images else None,
        image_mask=(torch.arange(n) % 2 == 0) if images else None,
        videos=torch.randn(n, 2, 3, 64, 64, generator=g) if video else None,
        video_mask=(torch.arange(n) % 3 == 1) if video else None,
    )


def grads_by_group(model: XLLM) -> set[str]:
    names = set()
    for n, p in model.named_parameters():
        if p.grad is not None and p.grad.abs().sum() > 0:
            names.add(n)
    return names


EXPECTED = {
    # (stage, modality): prefixes that must receive gradients; everything else must not
    (0, "speech"): ["llm."],
    (1, "speech"): ["speech_encoder.", "cformer."],
    (1, "image"): ["vision_encoder.", "qformer.qformer.", "qformer.query_tokens", "itc."],
    (2, "speech"): ["cformer.predictor.", "cformer.layers.", "cformer.norm.", "speech_adapter."],
    (2, "image"): ["qformer.qformer.", "qformer.query_tokens", "image_adapter."],
    (2, "video"): ["qformer.video_query_tokens", "qformer.frame_embed", "video_adapter."],
    (3, "speech"): ["speech_adapter.", "image_adapter.", "video_adapter."],
}


@pytest.mark.parametrize("stage,modality", list(EXPECTED))
def test_stage_losses_and_gradients(cfg, stage, modality):
    torch.manual_seed(0)
    model = XLLM.from_config(cfg)
    XLLM_FAMILY.configure_stage(model, stage, modality)
    model.train()
    out = model(make_batch(4), stage)
    assert torch.isfinite(out.loss) and out.loss.ndim == 0
    assert all(isinstance(v, float) for v in out.logs.values())
    out.loss.backward()
    got = grads_by_group(model)
    allowed = EXPECTED[(stage, modality)]
    stray = [n for n in got if not any(n.startswith(p) for p in allowed)]
    assert not stray, f"frozen parameters got gradients: {stray[:5]}"
    for prefix in allowed:
        assert any(n.startswith(prefix) for n in got), f"{prefix} got no gradient"
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, n
    # frozen parts stay in eval mode while the interfaces train (no dropout, as at inference)
    if stage > 0:
        assert not model.llm.training
    if stage >= 2:  # the tiny Conformer trained in stage 1 is frozen from stage 2 on
        assert not model.speech_encoder.training and not any(m.training for m in model.speech_encoder.modules())
    if stage == 3:
        assert not model.cformer.layers.training and not model.cformer.predictor.training
        assert model.speech_adapter.training
    if (stage, modality) == (2, "speech"):
        assert model.cformer.layers.training and model.speech_adapter.training


def test_stage1_speech_logs_and_train_modules_override(cfg):
    model = XLLM.from_config(cfg)
    XLLM_FAMILY.configure_stage(model, 1, "all")
    out = model(make_batch(4), 1)
    assert {"cif_ce", "cif_quantity", "cif_ctc", "itc"} <= set(out.logs)
    XLLM_FAMILY.configure_stage(model, 3, train_modules=["speech_adapter", "cformer"])
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"speech_adapter", "cformer"}
    with pytest.raises(Exception):
        XLLM_FAMILY.configure_stage(model, 3, train_modules=["nonsense"])


def test_labels_only_on_target(cfg):
    from xllm_cli.models.llm import assemble

    model = XLLM.from_config(cfg)
    lay = model.formatter.layout("请忠实地识别该语音", ("speech",))
    embed = model.llm.get_input_embeddings()
    speech = torch.randn(5, embed.weight.shape[1])
    target = model.formatter.target_ids("你好")
    emb, mask, labels, pos = assemble(embed, [lay, lay], [{"speech": speech}, {"speech": speech[:2]}],
                                      [target, target], False, "cpu", torch.float32)
    assert target[-1] == model.tokenizer.eos_token_id
    for b in range(2):
        valid = labels[b][labels[b] != -100].tolist()
        assert valid == target
        n = int(mask[b].sum())
        assert labels[b, n - len(target):n].tolist() == target  # target (then EOS) closes the sequence
        assert pos[b, :n].tolist() == list(range(n))
    # the speech slot sits between <speech> and </speech>
    text_before = model.tokenizer.decode(list(lay.items[lay.items.index("speech") - 1]))
    assert text_before.endswith("<speech>")


@pytest.mark.parametrize("aligned", [True, False])
def test_generate_batch1_equals_batch32(cfg, aligned):
    c = copy.deepcopy(cfg)
    c["llm"]["align_speech_positions"] = aligned
    torch.manual_seed(1)
    model = XLLM.from_config(c).eval()
    with torch.no_grad():  # a sharper random LLM whose greedy output varies from utterance to utterance
        for w in model.llm.parameters():
            if w.ndim > 1:
                w.normal_(0, 0.3)
    batch = make_batch(32, seed=5)
    full = model.generate(batch, max_new_tokens=8)
    assert len(full) == 32 and all(len(h) == 1 for h in full)
    assert len({h[0][0] for h in full}) > 1
    for i in range(32):
        one = Batch(
            utt_ids=[batch.utt_ids[i]],
            feats=batch.feats[i : i + 1, : int(batch.feat_lens[i])],
            feat_lens=batch.feat_lens[i : i + 1],
            texts=[batch.texts[i]],
            images=batch.images[i : i + 1],
            image_mask=batch.image_mask[i : i + 1],
            videos=batch.videos[i : i + 1],
            video_mask=batch.video_mask[i : i + 1],
        )
        single = model.generate(one, max_new_tokens=8)
        assert single[0][0][0] == full[i][0][0], i
        assert abs(single[0][0][1] - full[i][0][1]) < 1e-3
    # n-best from beam search
    nbest = model.generate(make_batch(2), max_new_tokens=6, num_beams=3, num_return_sequences=3)
    assert all(len(h) == 3 for h in nbest)
    assert all(h[0][1] >= h[-1][1] for h in nbest)


def test_use_image_false_drops_image(cfg):
    model = XLLM.from_config(cfg).eval()
    batch = make_batch(3, video=False)
    no_img = copy.copy(batch)
    no_img.images, no_img.image_mask = None, None
    a = model.generate(batch, max_new_tokens=5, use_image=False)
    b = model.generate(no_img, max_new_tokens=5)
    assert [h[0][0] for h in a] == [h[0][0] for h in b]
    assert all(abs(x[0][1] - y[0][1]) < 1e-4 for x, y in zip(a, b))


def test_prompt_override(cfg):
    model = XLLM.from_config(cfg)
    batch = make_batch(2, images=False, video=False, prompts=[None, "你好"])
    per_utt = [{"speech": None}, {"speech": None}]
    lays = model._layouts(batch, per_utt)
    decoded = [model.tokenizer.decode([t for it in lay.items if not isinstance(it, str) for t in it]) for lay in lays]
    assert decoded[0].endswith("请忠实地识别该语音")
    assert decoded[1].endswith("你好") and "识别" not in decoded[1]


def test_chat_template_path(cfg, tmp_path):
    from xllm_cli.models.tokenizer import load_tokenizer

    src = Path(cfg["llm"]["path"])
    llm_dir = tmp_path / "llm_chat"
    llm_dir.mkdir()
    for f in src.iterdir():
        (llm_dir / f.name).write_bytes(f.read_bytes())
    tok = load_tokenizer(llm_dir)
    tok.chat_template = (
        "{% for m in messages %}<s>{{ m['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<s>:{% endif %}"
    )
    tok.save_pretrained(str(llm_dir))
    c = copy.deepcopy(cfg)
    c["llm"]["path"] = str(llm_dir)
    model = XLLM.from_config(c)
    assert model.formatter.use_chat_template
    lay = model.formatter.layout("请忠实地识别该语音", ("image", "speech"))
    assert [i for i in lay.items if isinstance(i, str)] == ["image", "speech"]
    pieces = [model.tokenizer.decode(list(i)) for i in lay.items if not isinstance(i, str)]
    bos, eos = model.tokenizer.bos_token_id, model.tokenizer.eos_token_id
    first = list(lay.items[0])
    assert first[0] == bos  # "<s>" in the template is the BOS token, not three characters
    assert pieces[0] == "<s><image>" and pieces[1] == "</image><speech>"
    assert list(lay.items[-1])[-3:] == [eos, bos] + model.tokenizer(":", add_special_tokens=False)["input_ids"]
    XLLM_FAMILY.configure_stage(model, 2, "speech")
    model.train()
    out = model(make_batch(2, images=False, video=False), 2)
    assert torch.isfinite(out.loss)
    model.eval()
    assert len(model.generate(make_batch(2), max_new_tokens=4)) == 2


def test_save_load_round_trip(cfg, tmp_path):
    torch.manual_seed(0)
    model = XLLM.from_config(cfg)
    XLLM_FAMILY.configure_stage(model, 1, "all")
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(make_batch(4), 1).loss.backward()
    opt.step()
    model.eval()
    save_model(model, cfg, tmp_path / "m")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m" / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert not any(k.startswith("llm.") for k in keys)  # the LLM is referenced by path, not copied
    assert any(k.startswith("speech_encoder.") for k in keys)  # random-init conformer is saved
    assert any(k.startswith("vision_encoder.") for k in keys)  # tiny vision encoder too
    loaded = load_model(tmp_path / "m")
    batch = make_batch(3)
    assert loaded.nar_decode(batch) == model.nar_decode(batch)
    a, b = loaded.generate(batch, max_new_tokens=6), model.generate(batch, max_new_tokens=6)
    assert [h[0][0] for h in a] == [h[0][0] for h in b]
    assert all(abs(x[0][1] - y[0][1]) < 1e-5 for x, y in zip(a, b))
    XLLM_FAMILY.configure_stage(loaded, 2, "speech")
    XLLM_FAMILY.configure_stage(model, 2, "speech")
    torch.testing.assert_close(loaded(batch, 2).loss, model(batch, 2).loss)
    # stage 0 trains the LLM: then its weights must be saved
    XLLM_FAMILY.configure_stage(model, 0)
    save_model(model, cfg, tmp_path / "m0")
    with safe_open(str(tmp_path / "m0" / "model.safetensors"), "pt") as f:
        assert any(k.startswith("llm.") for k in f.keys())
    assert yaml.safe_load((tmp_path / "m" / "config.yaml").read_text())["model"]["llm"]["path"] == cfg["llm"]["path"]


def test_presets_parse():
    from xllm_cli.config.saved import read_config

    presets = sorted(PRESET.parent.glob("*.yaml"))
    assert len(presets) >= 5
    for p in presets:
        m = parse_model(read_config(p)["model"])  # typed: unknown keys or wrong types fail here
        assert m.speech_encoder.type in ("conformer", "whisper", "hubert", "wav2vec2")
        assert m.cformer.d_model % m.cformer.num_heads == 0, p
        if m.speech_encoder.type == "conformer":  # CPU presets: the encoder trains from scratch, in fp32
            assert m.speech_encoder.path is None and m.dtype in (None, "float32"), p
        else:  # GPU presets: pretrained frozen encoder and LLM in bf16
            assert m.llm.path and m.speech_encoder.path and m.dtype == "bfloat16", p


def test_pretrained_parts_are_referenced_not_copied(cfg, tmp_path):
    from safetensors import safe_open
    from transformers import CLIPVisionConfig, CLIPVisionModel, WhisperConfig, WhisperModel

    torch.manual_seed(0)
    WhisperModel(WhisperConfig(
        d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80, max_source_positions=1500,
        max_target_positions=32, vocab_size=100, pad_token_id=1, bos_token_id=2, eos_token_id=3,
        decoder_start_token_id=2,
    )).save_pretrained(str(tmp_path / "whisper"))
    CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                     num_attention_heads=4, image_size=64, patch_size=16)).save_pretrained(
        str(tmp_path / "clip"))
    c = copy.deepcopy(cfg)
    c["speech_encoder"] = {"type": "whisper", "path": str(tmp_path / "whisper")}
    c["cformer"].update(d_model=32)
    c["vision_encoder"] = {"path": str(tmp_path / "clip")}
    model = XLLM.from_config(c)
    XLLM_FAMILY.configure_stage(model, 1, "all")
    assert not any(p.requires_grad for p in model.speech_encoder.parameters())  # pretrained: frozen
    assert not any(p.requires_grad for p in model.vision_encoder.parameters())
    model.train()
    assert not model.speech_encoder.training and model.cformer.training
    model(make_batch(2), 1).loss.backward()
    model.eval()
    save_model(model, c, tmp_path / "m")
    with safe_open(str(tmp_path / "m" / "model.safetensors"), "pt") as f:
        prefixes = {k.split(".")[0] for k in f.keys()}
    assert prefixes.isdisjoint({"llm", "speech_encoder", "vision_encoder"})
    assert {"cformer", "qformer", "speech_adapter"} <= prefixes
    loaded = load_model(tmp_path / "m")
    batch = make_batch(2)
    assert loaded.nar_decode(batch) == model.nar_decode(batch)
    # fine-tuning the pretrained encoder makes it part of the saved model
    c["speech_encoder"]["finetune"] = True
    model.cfg = parse_model(c)
    XLLM_FAMILY.configure_stage(model, 1, "speech")
    assert all(p.requires_grad for p in model.speech_encoder.encoder.layers.parameters())
    save_model(model, c, tmp_path / "m2")
    with safe_open(str(tmp_path / "m2" / "model.safetensors"), "pt") as f:
        assert any(k.startswith("speech_encoder.") for k in f.keys())
    # ... and stays in it when a later stage, with the encoder frozen again, saves the model anew
    reloaded = load_model(tmp_path / "m2")
    assert reloaded.trained_pretrained == {"speech_encoder"}
    XLLM_FAMILY.configure_stage(reloaded, 2, "speech")
    save_model(reloaded, c, tmp_path / "m3")
    with safe_open(str(tmp_path / "m3" / "model.safetensors"), "pt") as f:
        assert any(k.startswith("speech_encoder.") for k in f.keys())


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu,
                                        pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")])],
)
def test_bf16_llm_with_fp32_interfaces(cfg, device):
    c = copy.deepcopy(cfg)
    c["dtype"] = "bfloat16"
    model = XLLM.from_config(c).to(device)
    assert model.llm.get_input_embeddings().weight.dtype == torch.bfloat16
    assert model.speech_adapter[0].weight.dtype == torch.float32  # trained parts stay fp32
    XLLM_FAMILY.configure_stage(model, 2, "speech")
    model.train()
    out = model(make_batch(2).to(device), 2)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.speech_adapter[0].weight.grad is not None
    model.eval()
    hyps = model.generate(make_batch(2), max_new_tokens=4)
    assert len(hyps) == 2 and all(isinstance(h[0][0], str) for h in hyps)


def test_aligned_speech_positions_in_training_and_generation(cfg):
    """llm.align_speech_positions: speech vector k shares the position of answer token k, in training and decoding."""
    from xllm_cli.models.llm import assemble

    c = copy.deepcopy(cfg)
    c["llm"]["align_speech_positions"] = True
    torch.manual_seed(0)
    model = XLLM.from_config(c).eval()
    embed = model.llm.get_input_embeddings()
    lay = model.formatter.layout("请忠实地识别该语音", ("speech",))
    speech = torch.randn(4, embed.weight.shape[1])
    target = model.formatter.target_ids("你好")
    _, mask, labels, pos = assemble(embed, [lay], [{"speech": speech}], [target], False, "cpu", torch.float32, "speech")
    i = lay.items.index("speech")
    n_before = sum(len(it) for it in lay.items[:i])
    n_after = sum(len(it) for it in lay.items[i + 1 :])
    p = pos[0].tolist()
    answer = p[n_before + 4 + n_after :]
    assert p[:n_before] == list(range(n_before))
    assert p[n_before + 4 : n_before + 4 + n_after] == list(range(n_before, n_before + n_after))
    start = n_before + n_after
    assert p[n_before : n_before + 4] == list(range(start, start + 4))
    assert answer == list(range(start, start + len(target)))
    # generation continues the positions of the prompt: equal to a manual greedy loop with explicit positions
    with torch.no_grad():  # sharper random LLM: outputs change with position, so the comparison has teeth
        for w in model.llm.parameters():
            if w.ndim > 1:
                w.normal_(0, 0.3)
    batch = make_batch(3, images=False, video=False)
    hyps = model.generate(batch, max_new_tokens=5)
    assert len({ch for h in hyps for ch in h[0][0]}) > 1
    per_utt, _, _ = model._modality_inputs(batch, {"speech"}, None)
    emb, mask, _, pos = assemble(embed, model._layouts(batch, per_utt), per_utt, None, True, "cpu", torch.float32,
                                 "speech")
    for b in range(3):
        n = int(mask[b].sum())
        e, q = emb[b : b + 1, -n:], pos[b : b + 1, -n:]
        out = []
        with torch.no_grad():
            for _ in range(5):
                t = int(model.llm(inputs_embeds=e, position_ids=q).logits[0, -1].argmax())
                if t == model.tokenizer.eos_token_id:
                    break
                out.append(t)
                e = torch.cat([e, embed(torch.tensor([[t]]))], 1)
                q = torch.cat([q, q[:, -1:] + 1], 1)
        assert hyps[b][0][0] == model.tokenizer.decode(out, skip_special_tokens=True).strip()
    # stage 0 and 2 train with the same layout
    XLLM_FAMILY.configure_stage(model, 0)
    model.train()
    assert torch.isfinite(model(make_batch(2), 0).loss)


def test_stage0_objective_copy_format(cfg):
    """Stage 0 feeds the LLM the final instruction format with the transcript's own embeddings in the speech slot."""
    from xllm_cli.models.stage0 import Stage0Objective
    from xllm_cli.models.tokenizer import load_tokenizer
    from transformers import AutoModelForCausalLM

    llm = AutoModelForCausalLM.from_pretrained(cfg["llm"]["path"])
    tok = load_tokenizer(cfg["llm"]["path"])
    c = copy.deepcopy(cfg)
    c["llm"]["align_speech_positions"] = True
    c["llm_init"]["stage0_tasks"] = {"asr": 1.0}
    obj = Stage0Objective(llm, tok, parse_model(c))
    seen = {}
    real_forward = llm.forward

    def spy(**kw):
        seen.update(kw)
        return real_forward(**kw)

    llm.forward = spy
    out = obj(Batch(utt_ids=["a"], texts=["你好世界"]))
    assert torch.isfinite(out.loss) and "ppl" in out.logs
    emb, pos, labels = seen["inputs_embeds"][0], seen["position_ids"][0].tolist(), seen["labels"][0]
    ids = tok("你好世界", add_special_tokens=False)["input_ids"]
    table = llm.get_input_embeddings().weight
    lay = obj.formatter.layout(obj.prompts["asr"], ("speech",))
    start = sum(len(it) for it in lay.items[: lay.items.index("speech")])
    torch.testing.assert_close(emb[start : start + 4], table[ids])  # the transcript sits in the speech slot
    answer = (labels != -100).nonzero().flatten().tolist()
    assert labels[answer].tolist() == ids + [tok.eos_token_id]
    assert pos[start : start + 4] == [pos[a] for a in answer[:4]]  # aligned with the answer tokens
    out.loss.backward()
    assert llm.get_input_embeddings().weight.grad is not None
    # plain LM task: just BOS + text + EOS
    c["llm_init"]["stage0_tasks"] = {"lm": 1.0}
    Stage0Objective(llm, tok, parse_model(c))(Batch(utt_ids=["a"], texts=["你好"]))
    assert seen["inputs_embeds"].shape[1] == 1 + 2 + 1
