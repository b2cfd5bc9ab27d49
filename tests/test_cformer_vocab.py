"""``model.cformer.vocab``: the C-Former's classes restricted to the training text's token ids.

With a 49k-token LLM (SmolLM2) the full classifier dominates stage 1 though a small corpus
uses ~100 ids. ``train_text`` keeps those ids (+ one catch-all class), saves the id map with
the weights (the ``cformer.vocab_ids`` buffer) and maps back to LLM ids when decoding.
``full`` (the default) must leave the tiny preset exactly as it was.
"""

from __future__ import annotations

import copy

import pytest
import torch

from xllm_cli.config.schema import parse_model
from tests.test_models import TEXTS, cfg, make_batch  # noqa: F401  (cfg: the tiny-preset fixture)
from xllm_cli.models.saved_model import load_model, save_model
from xllm_cli.models.xllm import XLLM
from xllm_cli.training import checkpoint as ck
from xllm_cli.training.xllm_family import XLLM_FAMILY

TRAIN = TEXTS[:3]  # the "training text": some characters of TEXTS[3:] are outside it


def subset_cfg(cfg):  # noqa: F811
    c = copy.deepcopy(cfg)
    c["cformer"]["vocab"] = "train_text"
    c["cformer"]["ctc_weight"] = 0.3  # the CTC head follows the subset too
    return c


def fitted(cfg) -> XLLM:  # noqa: F811
    torch.manual_seed(0)
    model = XLLM.from_config(subset_cfg(cfg))
    n = model.fit_cformer_vocab(TRAIN)
    ids = sorted({i for t in TRAIN for i in model.tokenizer(t, add_special_tokens=False)["input_ids"]})
    assert n == len(ids) and model.cformer.vocab_ids.tolist() == ids
    return model


def test_full_vocabulary_is_the_default_and_unchanged(cfg):  # noqa: F811
    torch.manual_seed(0)
    model = XLLM.from_config(cfg)
    v = len(model.tokenizer)
    assert model.cformer.vocab_ids is None and model.fit_cformer_vocab(TRAIN) is None
    assert model.cformer.classifier.out_features == v and model.itc.text_embed.num_embeddings == v
    assert not any("vocab_ids" in k for k in model.state_dict())
    # the same random draws as a model built before the option existed: classifier right after the norm
    torch.manual_seed(0)
    again = XLLM.from_config(copy.deepcopy(cfg))
    assert torch.equal(again.cformer.classifier.weight, model.cformer.classifier.weight)


def test_subset_classes_map_both_ways(cfg):  # noqa: F811
    model = fitted(cfg)
    c = model.cformer
    k = len(c.vocab_ids)
    assert c.classifier.out_features == k + 1 and c.ctc_head.out_features == k + 2  # + catch-all (+ blank)
    assert model.itc.text_embed.num_embeddings == k + 1
    inside = c.vocab_ids[[0, k - 1, 2]]
    outside = torch.tensor([max(c.vocab_ids.max().item() + 1, len(model.tokenizer) - 1)])
    got = c.classes(torch.cat([inside, outside, torch.tensor([-100])]))
    assert got.tolist() == [0, k - 1, 2, k, -100]
    assert c.token_ids([0, k - 1, k, 2]) == [c.vocab_ids[0].item(), c.vocab_ids[k - 1].item(), c.vocab_ids[2].item()]


def test_subset_model_trains_saves_loads_and_nar_decodes(cfg, tmp_path):  # noqa: F811
    model = fitted(cfg)
    XLLM_FAMILY.configure_stage(model, 1, "all")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    batch = make_batch(4, video=False)  # speech (CE + CTC) and images (ITC on the same classes)
    first = None
    for _ in range(5):
        out = model(batch)
        assert torch.isfinite(out.loss)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        first = first if first is not None else out.logs["cif_ce"]
    assert out.logs["cif_ce"] < first
    assert model.cformer.classifier.weight.grad.abs().sum() > 0 and "cif_ctc" in out.logs
    assert model.itc.text_embed.weight.grad.abs().sum() > 0

    # Force one class everywhere: NAR decoding must give its LLM token, not the class index.
    k = len(model.cformer.vocab_ids)
    with torch.no_grad():
        model.cformer.classifier.weight.zero_()
        model.cformer.classifier.bias.fill_(-10.0)
        model.cformer.classifier.bias[k - 1] = 10.0
    want_id = model.cformer.vocab_ids[k - 1].item()
    model.eval()
    hyps = model.nar_decode(batch)
    ids = model.cformer.greedy_tokens(*model._encode_speech(batch))
    assert all(set(i) <= {want_id} for i in ids) and any(ids)
    assert all(h == model.tokenizer.decode([want_id] * len(i), skip_special_tokens=True).strip()
               for h, i in zip(hyps, ids))

    save_model(model, subset_cfg(cfg), tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert torch.equal(loaded.cformer.vocab_ids, model.cformer.vocab_ids)
    assert torch.equal(loaded.cformer.classifier.weight, model.cformer.classifier.weight)
    assert loaded.nar_decode(batch) == hyps

    # A later stage starts from it: built from the recipe's config, sized by the saved map.
    nxt = XLLM_FAMILY.build_model(parse_model(subset_cfg(cfg)), tmp_path / "m")
    assert torch.equal(nxt.cformer.vocab_ids, model.cformer.vocab_ids)
    XLLM_FAMILY.configure_stage(nxt, 2, "speech")
    assert torch.isfinite(nxt(make_batch(2, images=False, video=False)).loss)


def test_checkpoint_load_into_sizes_a_fresh_subset_model(cfg):  # noqa: F811
    model = fitted(cfg)
    XLLM_FAMILY.configure_stage(model, 1, "all")
    state = ck.trainable_state_dict(model)  # what a training checkpoint holds
    assert "cformer.vocab_ids" in state and "cformer.classifier.weight" in state
    fresh = XLLM.from_config(subset_cfg(cfg))
    assert len(fresh.cformer.vocab_ids) == 0
    ck.load_into(fresh, state, "test")
    assert torch.equal(fresh.cformer.vocab_ids, model.cformer.vocab_ids)


@pytest.mark.parametrize("value", ["full", "train_text"])
def test_schema_accepts_the_two_values(cfg, value):  # noqa: F811
    c = copy.deepcopy(cfg)
    c["cformer"]["vocab"] = value
    assert parse_model(c).cformer.vocab == value
