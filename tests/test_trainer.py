"""The generic training loop on a toy model: schedule, learning, accumulation, checkpoints, CER, errors.

The toy model is the tests' own family (tests/toy_family.py), registered like an extension.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

from xllm_cli.errors import XllmError
from xllm_cli.training import checkpoint as ck
from xllm_cli.training.schedule import Schedule
from xllm_cli.training.trainer import TrainOptions, Trainer, char_errors
from toy_family import ToyModelConfig, build_toy, save_toy

torch.set_num_threads(1)


def toy(batch_size=4, cer_utts=0, dropout=0.1, utts=32):
    model, source = build_toy(ToyModelConfig(dim=6, dropout=dropout, toy_utts=utts, toy_dev_utts=8), batch_size,
                              seed=0, cer_utts=cer_utts, rank=0, world_size=1)
    return model, source


def test_schedules():
    cos = Schedule("cosine", lr=1.0, warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert cos.lr_at(0) == pytest.approx(0.1)  # first update: 1/10 of the way up
    assert cos.lr_at(9) == pytest.approx(1.0)  # end of warmup: the peak
    assert cos.lr_at(59) == pytest.approx(0.55)  # half way down the cosine
    assert cos.lr_at(109) == pytest.approx(0.1) and cos.lr_at(500) == pytest.approx(0.1)
    noam = Schedule("noam", lr=2.0, warmup_steps=4, total_steps=100)
    assert noam.lr_at(3) == pytest.approx(2.0) and noam.lr_at(15) == pytest.approx(1.0)
    assert Schedule("constant", lr=0.5, warmup_steps=2).lr_at(50) == 0.5
    with pytest.raises(XllmError, match="unknown schedule"):
        Schedule("exp")


def test_cer_counts():
    assert char_errors(["kitten"], ["sitting"]) == (3, 6)  # the minimum edit distance
    assert char_errors(["今天 天气"], ["今天天汽好"]) == (2, 4)  # spaces ignored, 1 sub + 1 ins
    assert char_errors(["你好。", "ab"], ["你好", ""]) == (3, 5)  # punctuation counts; summed over pairs
    assert char_errors([""], [""]) == (0, 0) and char_errors([], []) == (0, 0)


def test_families_are_looked_up_by_model_type():
    from toy_family import ToyFamily

    from xllm_cli.training.family import get_family
    from xllm_cli.training.xllm_family import XLLMFamily

    assert isinstance(get_family("toy"), ToyFamily)  # registered by importing toy_family
    assert isinstance(get_family(None), XLLMFamily) and get_family("xllm") is get_family(None)
    with pytest.raises(XllmError, match="no such model family"):
        get_family("nonsense")


def test_toy_learns_keeps_best_checkpoints_and_exports_best(tmp_path):
    model, source = toy(cer_utts=8)
    opts = TrainOptions(epochs=6, lr=0.02, warmup_steps=2, valid_interval=4, keep_best=2, keep_last=1,
                        log_interval=100, cer_utts=8)
    trainer = Trainer(model, source, opts, tmp_path / "stage1", 1,
                      decode_fn=lambda m, b: m.decode(b),
                      export_fn=lambda m, d: save_toy(m, {"type": "toy", "dim": 6}, d))
    before = trainer.validate()
    state = trainer.fit()
    after = trainer.validate()
    assert state.step == 6 * 8 and state.epoch == 6 and state.batch == 0
    assert after["loss"] < before["loss"] * 0.8
    assert "cer" in after and 0 <= after["cer"] <= 100
    kept = ck.list_checkpoints(tmp_path / "stage1")
    best_steps = [b[1] for b in state.best[:2]]
    assert {int(p.name[5:]) for p in kept} == set(best_steps) | {state.step}
    assert [p.name for p in ck.best_checkpoints(tmp_path / "stage1", 1)] == [f"step_{best_steps[0]}"]
    assert (tmp_path / "stage1/best/model.safetensors").is_file()
    saved = json.loads((kept[-1] / "trainer_state.json").read_text())
    assert saved["step"] == state.step and saved["epoch"] == 6 and saved["batch"] == 0
    # the checkpoint holds the buffer too, and reads back with weights_only loading
    weights, optim, tstate, rng = ck.load_checkpoint(kept[-1])
    assert weights["seen"].item() == 6 * 32 and "state" in optim and rng is not None


def test_gradient_accumulation_matches_a_bigger_batch(tmp_path):
    finals = []
    for bs, accum in ((4, 1), (2, 2)):
        torch.manual_seed(0)
        model, source = toy(batch_size=bs, dropout=0.0)
        opts = TrainOptions(epochs=2, lr=0.01, accum_grad=accum, grad_clip=0, log_interval=100, weight_decay=0.0)
        Trainer(model, source, opts, tmp_path / f"bs{bs}", 1).fit()
        finals.append({k: v.clone() for k, v in model.state_dict().items()})
    for k in finals[0]:
        if k != "seen":
            assert torch.allclose(finals[0][k], finals[1][k], atol=1e-5), k


def test_max_steps_stops_early_and_caps_the_schedule(tmp_path):
    model, source = toy()
    state = Trainer(model, source, TrainOptions(epochs=50, max_steps=5, log_interval=100), tmp_path / "s", 1).fit()
    assert state.step == 5 and state.total_steps == 5
    assert ck.latest_checkpoint(tmp_path / "s").name == "step_5"  # final validation + checkpoint


@dataclass
class _Out:
    loss: torch.Tensor
    logs: dict


class _Frozen(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(2), requires_grad=False)

    def forward(self, batch, stage):
        return _Out(self.w.sum() * float("nan"), {})


def test_errors_are_one_line_user_errors(tmp_path):
    _, source = toy()
    with pytest.raises(XllmError, match="no trainable parameters"):
        Trainer(_Frozen(), source, TrainOptions(), tmp_path / "a", 1)
    m = _Frozen()
    m.w.requires_grad_(True)
    with pytest.raises(XllmError, match="loss is nan"):
        Trainer(m, source, TrainOptions(log_interval=100), tmp_path / "b", 1).fit()
    from xllm_cli.config.schema import parse_recipe

    with pytest.raises(XllmError, match=r"r\.yaml: stage1\.lrr: unknown key \(did you mean lr\?\)"):
        parse_recipe({"stage1": {"lrr": 1}}, "r.yaml")
    with pytest.raises(XllmError, match=r"stage1\.amp: expected one of 'auto', 'bf16', 'none', got 'fp16'"):
        parse_recipe({"stage1": {"amp": "fp16"}}, "r.yaml")
