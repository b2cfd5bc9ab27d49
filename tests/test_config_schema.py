"""The typed recipe schema: unknown keys and wrong types refused with the key's path, defaults in one place."""

from __future__ import annotations

from pathlib import Path

import pytest

from xllm_cli.config import load_recipe
from xllm_cli.config.reference import render
from xllm_cli.config.schema import BatchConfig, ModelConfig, Recipe, parse_recipe, register_model_config
from xllm_cli.config.typed import parse, to_dict
from xllm_cli.errors import XllmError

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "tiny.yaml"


@pytest.mark.parametrize("recipe", sorted(REPO.glob("recipes/*.yaml")) + sorted(REPO.glob("egs/*/conf/*.yaml")),
                         ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_recipe_parses(recipe):
    parsed = parse_recipe(load_recipe(recipe), str(recipe))
    assert isinstance(parsed.model, ModelConfig)
    assert parsed.stage(1).epochs >= 1


@pytest.mark.parametrize(
    "override, message",
    [
        ("stag1.lr=1e-3", "stag1: unknown key (did you mean stage1?)"),
        ("model.speech_encoder.d_modle=96", "model.speech_encoder.d_modle: unknown key (did you mean d_model?)"),
        ("data.batch.max_batch_secs=30", "data.batch.max_batch_secs: unknown key (did you mean max_batch_seconds?)"),
        ("stage1.epochs=one", "stage1.epochs: expected an integer, got 'one'"),
        ("stage1.betas=0.9", "stage1.betas: expected a list of 2 values, got 0.9"),
        ("stage1.scheduler=cosin", "stage1.scheduler: expected one of 'cosine', 'noam', 'linear', 'constant'"),
        ("stage2.batch.num_frame=4", "stage2.batch.num_frame: unknown key (did you mean num_frames?)"),
        ("model.type=nope", "model.type: unknown model type 'nope'"),
        ("model.cformer.ctc_weight=true", "model.cformer.ctc_weight: expected a number, got True"),
    ],
)
def test_bad_keys_and_types_are_refused_with_the_dotted_path(override, message):
    with pytest.raises(XllmError) as e:
        parse_recipe(load_recipe(TINY, [override]), "recipes/tiny.yaml")
    assert str(e.value).startswith("recipes/tiny.yaml: ")
    assert message in str(e.value)


def test_defaults_live_in_the_schema_and_numbers_widen():
    recipe = parse_recipe({"stage1": {"lr": 1, "data": {"dev": "dev"}}})
    assert recipe.stage(1).lr == 1.0 and isinstance(recipe.stage(1).lr, float)
    assert recipe.stage(1).data.dev == ["dev"]  # one name is a list of one
    assert recipe.model.cformer.tail_threshold == 0.5
    assert recipe.batch(1) == BatchConfig()
    with pytest.raises(XllmError, match="no stage2: section"):
        recipe.stage(2)


def test_stage_batch_overrides_data_batch():
    recipe = parse_recipe(load_recipe(TINY))
    assert recipe.data.batch.spec_augment is False
    assert recipe.batch(1).spec_augment is True  # stage1.batch: {spec_augment: true}
    assert recipe.batch(1).num_frames == recipe.batch(3).num_frames == 4  # one value for training and decoding
    assert recipe.batch(0).batch_size == 32


def test_round_trip_through_plain_data_is_lossless():
    recipe = parse_recipe(load_recipe(TINY))
    again = parse_recipe(recipe.to_dict())
    assert again == recipe
    assert isinstance(to_dict(recipe)["stage1"]["betas"], list)  # YAML-safe


def test_cross_field_rules_name_the_section():
    with pytest.raises(XllmError, match=r"stage1.metric: cer needs cer_utts > 0"):
        parse_recipe({"stage1": {"metric": "cer"}})


def test_another_model_family_registers_its_own_section():
    from dataclasses import dataclass

    @dataclass
    class ToyModel:
        type: str = "toy_schema_test"
        dim: int = 8

    register_model_config("toy_schema_test", ToyModel)
    recipe = parse_recipe({"model": {"type": "toy_schema_test", "dim": 4}})
    assert recipe.model == ToyModel(dim=4)
    with pytest.raises(XllmError, match="model.hidden: unknown key"):
        parse_recipe({"model": {"type": "toy_schema_test", "hidden": 4}})


def test_parse_keeps_an_already_typed_section():
    section = BatchConfig(num_frames=3)
    assert parse(BatchConfig, section) is section
    assert isinstance(Recipe().model, ModelConfig)


def test_config_reference_in_docs_is_generated_from_the_schema():
    assert (REPO / "docs" / "config.md").read_text(encoding="utf-8") == render()
