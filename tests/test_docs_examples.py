"""The worked examples of docs/extending.md run, register and work end to end at small scale.

Each code block that follows a ``<!-- test: NAME -->`` line is executed in a fresh
namespace (the prep command in a copy of ``commands/prep.py``'s namespace, where it
would live), with tiny random data and models made in ``tmp_path``. Every test
removes what its block registered, so that other tests see the registries as shipped.
No network, no GPU.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "extending.md"
BLOCK = re.compile(r"<!-- test: ([\w-]+) -->\s*\n```(\w+)\n(.*?)\n```", re.S)


def doc_blocks() -> dict[str, tuple[str, str]]:
    """``name -> (language, code)`` of the blocks marked to run."""
    blocks: dict[str, tuple[str, str]] = {}
    for name, lang, code in BLOCK.findall(DOC.read_text(encoding="utf-8")):
        assert name not in blocks, f"two blocks marked {name!r} in {DOC}"
        blocks[name] = (lang, code)
    return blocks


def run_block(name: str, namespace: dict | None = None, module: str | None = None) -> dict:
    """Execute block ``name``: in ``namespace``, else in a fresh module namespace named ``module``."""
    lang, code = doc_blocks()[name]
    assert lang == "python", f"block {name!r} is {lang}, not python"
    if namespace is None:
        namespace = {"__name__": module or f"docs_example_{name.replace('-', '_')}"}
    if "__name__" in namespace and namespace["__name__"] not in sys.modules:
        # dataclasses and typing resolve annotations through the module of the class
        mod = types.ModuleType(namespace["__name__"])
        mod.__dict__.update(namespace)
        sys.modules[namespace["__name__"]] = mod
        namespace = mod.__dict__
    exec(compile(code, f"{DOC}:{name}", "exec"), namespace)
    return namespace


@pytest.fixture
def fresh_modules():
    """Modules a test put into sys.modules are removed afterwards."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith(("docs_example_", "xllm_cli.corpora.librispeech")):
            sys.modules.pop(name, None)


def write_wav(path: Path, seconds: float, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sf.write(path, (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32), 16000)


def test_marked_blocks_are_all_covered():
    assert set(doc_blocks()) == {"corpus", "prep-command", "recipe", "encoder", "llm", "family", "decoding"}


# ----------------------------------------------------------------------------- a corpus


def fake_librispeech(root: Path) -> Path:
    """Two speakers per part, FLAC files of noise, one utterance without audio."""
    corpus = root / "LibriSpeech"
    texts = {"train-clean-100": ["HELLO WORLD", "A TINY CORPUS", "THREE WORDS HERE"],
             "dev-clean": ["DEV ONE", "DEV TWO"], "test-clean": ["TEST ONE", "TEST TWO"]}
    seed = 0
    for part, lines in texts.items():
        for spk in ("103", "1034"):
            chapter = corpus / part / spk / "1240"
            chapter.mkdir(parents=True)
            trans = []
            for k, text in enumerate(lines):
                utt = f"{spk}-1240-{k:04d}"
                trans.append(f"{utt} {text}")
                seed += 1
                sf.write(chapter / f"{utt}.flac",
                         (0.1 * np.random.default_rng(seed).standard_normal(8000 + 1600 * k)).astype(np.float32), 16000)
            trans.append(f"{spk}-1240-9999 NO AUDIO FOR THIS ONE")
            (chapter / f"{spk}-1240.trans.txt").write_text("\n".join(trans) + "\n", encoding="utf-8")
    return corpus


def test_corpus_example_writes_valid_data_dirs(tmp_path, fresh_modules):
    from xllm_cli.data.datadir import DataDir
    from xllm_cli.data.validate import validate_datadir

    ns = run_block("corpus", module="xllm_cli.corpora.librispeech")
    corpus = fake_librispeech(tmp_path)
    report = ns["prepare_librispeech"](corpus, tmp_path / "data")
    assert {name: s.utterances for name, s in report.sets.items()} == {"train": 6, "dev": 4, "test": 4}
    assert len(report.no_audio) == 6
    for name in ("train", "dev", "test"):
        result = validate_datadir(tmp_path / "data" / name, check_audio=True)
        assert result.ok, result.errors  # (FLAC gets a warning: Kaldi tools want WAV PCM)
    train = DataDir.load(tmp_path / "data" / "train")
    assert train.text["103-1240-0000"] == "HELLO WORLD"
    assert train.utt2spk["1034-1240-0002"] == "1034"
    assert train.utt2dur["103-1240-0001"] == pytest.approx(0.6)


def test_prep_command_example_runs_from_the_cli(tmp_path, fresh_modules):
    from typer.testing import CliRunner

    from xllm_cli.commands import prep
    from xllm_cli.data.validate import validate_datadir
    from xllm_cli.main import app

    run_block("corpus", module="xllm_cli.corpora.librispeech")  # what the command imports
    before = list(prep.prep_app.registered_commands)
    try:
        ns = dict(vars(prep))  # the command's home module, as if written there
        run_block("prep-command", namespace=ns)
        corpus = fake_librispeech(tmp_path)
        result = CliRunner().invoke(app, ["prep", "librispeech", str(corpus), str(tmp_path / "data")])
        assert result.exit_code == 0, result.output
        assert "train (6), dev (4), test (4)" in " ".join(result.output.split())
        assert (tmp_path / "data" / "prep_librispeech.log").is_file()
        assert validate_datadir(tmp_path / "data" / "dev").ok
        help_text = CliRunner().invoke(app, ["prep", "--help"]).output
        assert "librispeech" in help_text
    finally:
        prep.prep_app.registered_commands[:] = before


def test_recipe_example_is_valid_bash_using_the_shared_stages(tmp_path):
    lang, code = doc_blocks()["recipe"]
    assert lang == "bash"
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    script = tmp_path / "run.sh"
    script.write_text(code + "\n", encoding="utf-8")
    subprocess.run(["bash", "-n", str(script)], check=True)
    for sourced in re.findall(r"^\s*\. (utils/\S+)", code, re.M):
        assert (REPO / "egs" / sourced).is_file(), sourced
    assert "xllm prep librispeech" in code


# ----------------------------------------------------------------------------- a speech encoder


def test_encoder_example_registers_builds_and_encodes(fresh_modules):
    import torch

    from xllm_cli.config.schema import SpeechEncoderConfig
    from xllm_cli.data.features import FEATURE_EXTRACTORS
    from xllm_cli.models import speech_encoders as se

    before = dict(se.ENCODERS)
    try:
        run_block("encoder")
        assert se.ENCODERS["blstm"].features == "fbank"
        assert se.ENCODERS["blstm"].features in FEATURE_EXTRACTORS
        cfg = SpeechEncoderConfig(type="blstm", input_dim=20, subsampling=4, d_model=16, num_layers=2)
        torch.manual_seed(0)
        enc = se.build_speech_encoder(cfg, load_weights=True).eval()
        assert enc.output_dim == 16 and enc.pretrained is False
        feats = torch.randn(3, 50, 20)
        lens = torch.tensor([50, 31, 3])
        with torch.no_grad():
            hidden, out_lens = enc(feats, lens)
            alone, alone_lens = enc(feats[1:2, :31], lens[1:2])
        assert hidden.shape == (3, 13, enc.output_dim)
        assert out_lens.tolist() == [13, 8, 1]
        # an utterance encodes the same alone as in a padded batch
        assert alone_lens.tolist() == [8]
        torch.testing.assert_close(alone[0, :8], hidden[1, :8], atol=1e-5, rtol=1e-4)
        assert torch.isfinite(hidden).all()
    finally:
        se.ENCODERS.clear()
        se.ENCODERS.update(before)


# ----------------------------------------------------------------------------- an LLM, a model family


def test_llm_example_is_a_valid_recipe(tmp_path):
    from xllm_cli.config import load_recipe
    from xllm_cli.config.schema import parse_recipe

    lang, code = doc_blocks()["llm"]
    assert lang == "yaml"
    data = yaml.safe_load(code)
    data["include"] = [str(REPO / "recipes" / name) for name in data["include"]]
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    recipe = parse_recipe(load_recipe(path), str(path))
    assert recipe.model.llm.path == "/models/Qwen2.5-7B-Instruct"
    assert recipe.model.dtype == "bfloat16"
    assert recipe.model.speech_adapter.type == "mlp"
    assert recipe.model.llm.trust_remote_code is False
    assert recipe.model.speech_encoder is not None  # from the included preset


def make_text_dirs(root: Path) -> None:
    from xllm_cli.data.datadir import Utterance, write_datadir

    for name, texts in (("train", ["abc", "abd", "bcd", "cde"]), ("dev", ["abc", "bce"])):
        utts = []
        for k, text in enumerate(texts):
            wav = root / "wav" / f"{name}{k}.wav"
            write_wav(wav, 0.2, seed=k)
            utts.append(Utterance(utt_id=f"s1-{name}{k}", spk="s1", recording=f"s1-{name}{k}", path=str(wav),
                                  text=text, duration=0.2))
        write_datadir(root / name, utts)


def test_family_example_registers_and_trains_through_the_stage_runner(tmp_path, fresh_modules):
    import torch

    from xllm_cli.config import schema
    from xllm_cli.config.schema import parse_recipe
    from xllm_cli.training import family as fam
    from xllm_cli.config.saved import load_model_config
    from xllm_cli.training.distributed import DistInfo
    from xllm_cli.training.stage_data import StageRequest, train_options
    from xllm_cli.training.stages import run_stage

    families, configs = dict(fam._FAMILIES), dict(schema._MODEL_CONFIGS)
    try:
        ns = run_block("family")
        family = fam.get_family("charlm")
        assert isinstance(family, ns["CharLMFamily"])
        make_text_dirs(tmp_path / "data")
        exp = tmp_path / "exp"
        recipe = parse_recipe({
            "model": {"type": "charlm", "vocab_size": 64, "hidden": 16},
            "data": {"dir": str(tmp_path / "data"), "batch": {"batch_size": 2}},
            "stage1": {"data": {"train": ["train"], "dev": ["dev"]}, "epochs": 3, "lr": 0.01, "log_interval": 1},
        })
        assert isinstance(recipe.model, ns["CharLMConfig"]) and recipe.model.hidden == 16
        with pytest.raises(Exception, match="hiden"):
            parse_recipe({"model": {"type": "charlm", "hiden": 16}})  # typed: a typo is refused

        # the stage runner trains it like any family: config.yaml, checkpoints, best/, DONE
        torch.manual_seed(0)
        req = StageRequest(stage=1, exp=exp)
        model, source = family.build(recipe, req, DistInfo(), train_options(recipe, req))
        assert source.num_batches(0) == 2
        assert float(model(next(iter(source.valid_batches())), 1).loss.detach()) > 0
        assert run_stage(recipe, req, DistInfo()) is True
        best = exp / "stage1" / "best"
        assert (exp / "stage1" / "DONE").is_file() and (best / "config.yaml").is_file()
        back = family.load_model(best)
        assert isinstance(back, ns["CharLM"]) and back.cfg == recipe.model
        assert load_model_config(best) == recipe.model  # the one reader of saved configs gives the typed section
    finally:
        fam._FAMILIES.clear()
        fam._FAMILIES.update(families)
        schema._MODEL_CONFIGS.clear()
        schema._MODEL_CONFIGS.update(configs)


# ----------------------------------------------------------------------------- a decoding mode


def test_decoding_example_is_selectable_and_decodes_end_to_end(tmp_path, fresh_modules):
    from typer.testing import CliRunner

    from xllm_cli.data.datadir import Utterance, write_datadir
    from xllm_cli.decoding import systems
    from xllm_cli.decoding.decode import run_decode
    from xllm_cli.decoding.options import DecodeOptions
    from xllm_cli.main import app

    before = dict(systems.SYSTEMS)
    try:
        ns = run_block("decoding")
        assert "oracle" in systems.mode_names()
        texts = {"s1-a": "今天天气很好", "s1-b": "hello world", "s2-c": "识别"}
        utts = []
        for k, (utt, text) in enumerate(sorted(texts.items())):
            wav = tmp_path / "wav" / f"{utt}.wav"
            write_wav(wav, 0.3 + 0.1 * k, seed=k)
            utts.append(Utterance(utt_id=utt, spk=utt.split("-")[0], recording=utt, path=str(wav), text=text,
                                  duration=0.3 + 0.1 * k))
        write_datadir(tmp_path / "data" / "test", utts)
        exp = tmp_path / "exp"
        exp.mkdir()

        opts = DecodeOptions(exp=exp, data=tmp_path / "data" / "test", mode="oracle", batch_size=2)
        assert systems.system_for(opts) is ns["OracleSystem"]
        summary = run_decode(opts)
        out = exp / "decode_test_oracle"
        assert summary.decode_dir == out and summary.utterances == 3
        hyp = dict(line.split(" ", 1) for line in (out / "hyp").read_text(encoding="utf-8").splitlines())
        assert hyp == texts
        assert re.search(r"\b0\.00 \[ 0 / \d+", (out / "result.txt").read_text(encoding="utf-8"))

        result = CliRunner().invoke(app, ["decode", "--exp", str(exp), "--data", str(tmp_path / "data" / "test"),
                                          "--mode", "oracle", "--wer"])
        assert result.exit_code == 0, result.output
    finally:
        systems.SYSTEMS.clear()
        systems.SYSTEMS.update(before)
