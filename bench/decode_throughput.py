"""Decoding throughput: batch 1 against batched decoding of the same model and utterances.

What ``xllm decode`` does per batch is timed end to end (audio loading, fbank,
encoder + C-Former, LLM generation from the left-padded soft prompts with the KV
cache), for each batch size in turn over the same utterances, after one untimed
warm-up batch. Printed side by side: utterances/s, real-time factor (decode
seconds / audio seconds), wall and CPU seconds, speed-up over batch 1, and whether
the greedy hypotheses agree across batch sizes (they must).

Model: the tiny preset (``recipes/model/tiny.yaml``) with random weights and a
char tokenizer built from the set's text, or a trained experiment (``--exp``).
A random model rarely emits EOS, so most utterances generate up to their own
length bound (25 tokens/s of audio + 10): long hypotheses, where batching pays
most. The hypotheses are the same at every batch size (checked).

Data: ``.dev/mini_data/test`` when present, else ``egs/mini/data/test``, else
short random-noise utterances synthesised on the spot.

``--real-scale`` builds Whisper-small-sized encoder + Qwen2.5-0.5B-sized LLM
shapes (random weights, 151,936-token LM head) and decodes in bf16 on CUDA.

Examples:
  python bench/decode_throughput.py                       # tiny random model, CPU, batch 1 vs 16
  python bench/decode_throughput.py --exp exp/mini --stage 3 --max-utts 64
  python bench/decode_throughput.py --real-scale --device cuda --batch-sizes 1,16,64
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def find_data(given: str | None, workdir: Path) -> tuple[Path, str]:
    if given:
        return Path(given), given
    for candidate in (REPO / ".dev" / "mini_data" / "test", REPO / "egs" / "mini" / "data" / "test"):
        if (candidate / "wav.scp").is_file():
            return candidate, str(candidate.relative_to(REPO))
    return synthesise(workdir / "data" / "test", 48), "synthesised noise (48 utts, 0.8-3 s)"


def synthesise(out: Path, n: int) -> Path:
    import numpy as np
    import soundfile as sf

    from xllm_cli.data.datadir import Utterance, write_datadir

    rng = np.random.default_rng(0)
    texts = ["今天天气很好", "我们去公园散步", "请忠实地识别该语音", "你好世界"]
    utts = []
    for k in range(n):
        utt = f"spk{k % 4}-{k:03d}"
        wav = out.parent / "wav" / f"{utt}.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        samples = int(16000 * rng.uniform(0.8, 3.0))
        sf.write(wav, (0.1 * rng.standard_normal(samples)).astype(np.float32), 16000)
        utts.append(Utterance(utt_id=utt, spk=f"spk{k % 4}", recording=utt, path=str(wav), text=texts[k % 4],
                              duration=samples / 16000))
    write_datadir(out, utts)
    return out


def build_tiny(exp: Path, texts: list[str]) -> None:
    """The tiny preset with random weights (no vision tower: the speech path is what is timed)."""
    import torch
    import yaml

    from xllm_cli.config.schema import parse_model
    from xllm_cli.models.tiny_llm import create_tiny_llm
    from xllm_cli.models.saved_model import save_model
    from xllm_cli.models.xllm import XLLM

    cfg = parse_model(yaml.safe_load((REPO / "recipes" / "model" / "tiny.yaml").read_text(encoding="utf-8"))["model"])
    create_tiny_llm(cfg.llm_init, texts, exp / "stage0" / "llm")
    cfg = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, path=str(exp / "stage0" / "llm")),
                              vision_encoder=None)
    torch.manual_seed(0)
    save_model(XLLM.from_config(cfg), cfg, exp / "stage3" / "best")


def build_real_scale(exp: Path, texts: list[str]) -> None:
    """Whisper-small encoder (768 x 12 layers, 80 mels) + Qwen2.5-0.5B shapes (896 x 24, 151,936 vocab), random."""
    import torch
    import yaml
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, WhisperConfig, WhisperFeatureExtractor
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from xllm_cli.config.schema import LLMInitConfig, parse_model
    from xllm_cli.models.tiny_llm import tiny_llm_config
    from xllm_cli.models.tokenizer import build_char_tokenizer
    from xllm_cli.models.saved_model import save_model
    from xllm_cli.models.xllm import XLLM

    whisper_dir = exp / "pretrained" / "whisper-small-shape"
    whisper_dir.mkdir(parents=True, exist_ok=True)
    wcfg = WhisperConfig(d_model=768, encoder_layers=12, encoder_attention_heads=12, encoder_ffn_dim=3072,
                         decoder_layers=12, decoder_attention_heads=12, decoder_ffn_dim=3072, num_mel_bins=80)
    wcfg.save_pretrained(str(whisper_dir))
    WhisperFeatureExtractor(feature_size=80).save_pretrained(str(whisper_dir))
    torch.manual_seed(0)
    encoder = WhisperEncoder(wcfg)
    save_file({f"encoder.{k}": v.contiguous() for k, v in encoder.state_dict().items()},
              str(whisper_dir / "model.safetensors"))

    llm_dir = exp / "pretrained" / "qwen2.5-0.5b-shape"
    tok = build_char_tokenizer(texts)
    lcfg = tiny_llm_config(LLMInitConfig(model_type="qwen2", hidden_size=896, num_layers=24, num_heads=14,
                                         num_kv_heads=2, intermediate_size=4864, max_position_embeddings=4096,
                                         tie_word_embeddings=True), tok)
    lcfg.vocab_size = 151936  # the real LM head; ids past the char vocabulary decode to nothing
    llm = AutoModelForCausalLM.from_config(lcfg).to(torch.bfloat16)
    llm.save_pretrained(str(llm_dir))
    tok.save_pretrained(str(llm_dir))

    cfg = parse_model(yaml.safe_load((REPO / "recipes" / "model" / "whisper_small_qwen2.5_0.5b.yaml").read_text())["model"])
    cfg = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, path=str(llm_dir)),
                              speech_encoder=dataclasses.replace(cfg.speech_encoder, path=str(whisper_dir)),
                              vision_encoder=None)
    save_model(XLLM.from_config(cfg), cfg, exp / "stage3" / "best")


def run_setting(bundle, system_cls, opts, utts, batch_size: int, repeat: int) -> dict:
    """Decode ``utts`` at ``batch_size`` ``repeat`` times after a warm-up batch; the fastest pass counts."""
    from xllm_cli.decoding.batches import make_batches

    import torch

    opts.batch_size = batch_size
    decoder = system_cls(opts, opts.stage, bundle=bundle)  # the decoding system around the loaded bundle
    warm = make_batches(utts, batch_size, None, bundle.duration)[0]
    for batch in bundle.iter_batches([warm]):
        decoder.decode(batch)
    best = None
    for _ in range(repeat):
        hyps = {}
        if bundle.device.startswith("cuda"):
            torch.cuda.synchronize()
        timer = ModuleTimer([bundle.model.speech_encoder, bundle.model.cformer])
        wall0, cpu0 = time.perf_counter(), time.process_time()
        audio = 0.0
        for batch in decoder.batches(utts):
            for utt, nbest in zip(batch.utt_ids, decoder.decode(batch)):
                hyps[utt] = nbest[0][0]
            audio += sum(batch.durations)
        if bundle.device.startswith("cuda"):
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        timer.remove()
        run = {"batch": batch_size, "utts": len(hyps), "audio": audio, "wall": wall, "cpu": cpu, "hyps": hyps,
               "encoder": timer.seconds}
        if best is not None and run["hyps"] != best["hyps"]:
            raise SystemExit(f"batch {batch_size}: hypotheses differ between repeated passes")
        if best is None or run["wall"] < best["wall"]:
            best = run
    return best


class ModuleTimer:
    """Wall seconds spent inside some modules (speech encoder + C-Former: the per-utterance work)."""

    def __init__(self, modules) -> None:
        self.seconds = 0.0
        self._start = None
        self._handles = []
        for m in modules:
            if m is not None:
                self._handles.append(m.register_forward_pre_hook(self._pre))
                self._handles.append(m.register_forward_hook(self._post))

    def _pre(self, module, args):
        self._start = time.perf_counter()

    def _post(self, module, args, output):
        self.seconds += time.perf_counter() - self._start

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[-4:]))
    p.add_argument("--exp", help="a trained experiment (default: the tiny preset with random weights)")
    p.add_argument("--stage", type=int, default=3)
    p.add_argument("--data", help="data directory (default: .dev/mini_data/test, egs/mini/data/test, or synthesised)")
    p.add_argument("--batch-sizes", default="1,16", help="comma-separated; the first is the baseline (default 1,16)")
    p.add_argument("--max-utts", type=int, default=0, help="decode at most this many utterances (default 0: all)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda for --real-scale, else cpu)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's, all cores, as xllm decode uses)")
    p.add_argument("--real-scale", action="store_true", help="Whisper-small + 0.5B-LLM shapes, bf16 on CUDA")
    p.add_argument("--repeat", type=int, default=3, help="timed passes per batch size; the fastest counts (default 3)")
    p.add_argument("--keep", action="store_true", help="keep the temporary experiment")
    args = p.parse_args(argv)

    import torch

    from xllm_cli.data.datadir import DataDir
    from xllm_cli.decoding.batches import utt_duration
    from xllm_cli.decoding.bundle import load_for_decoding
    from xllm_cli.decoding.options import DecodeOptions
    from xllm_cli.decoding.systems import LlmSystem

    device = args.device or ("cuda" if args.real_scale else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="xllm_bench_decode_"))
    try:
        data_dir, data_name = find_data(args.data, workdir)
        data = DataDir.load(data_dir)
        utts = data.utterances()[: args.max_utts or None]
        texts = list((data.text or {}).values()) or ["你好"]
        if args.exp:
            exp, model_name = Path(args.exp), f"{args.exp} stage {args.stage}"
        else:
            exp = workdir / "exp"
            t0 = time.perf_counter()
            (build_real_scale if args.real_scale else build_tiny)(exp, texts)
            model_name = ("Whisper-small + Qwen2.5-0.5B shapes" if args.real_scale else "tiny preset") + ", random weights"
            print(f"built {model_name} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        bundle = load_for_decoding(exp, args.stage, device)
        opts = DecodeOptions(exp=exp, data=data_dir, stage=args.stage, device=device)
        for u in utts:
            utt_duration(u)
        results = [run_setting(bundle, LlmSystem, opts, utts, b, args.repeat) for b in sizes]
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    base = results[0]
    mean_chars = sum(len(h) for h in base["hyps"].values()) / max(1, len(base["hyps"]))
    print(f"\nmodel: {model_name}; device {device} ({'LLM in bf16' if bundle.llm_dtype is not None else 'fp32'}), "
          f"torch threads {torch.get_num_threads()}; data: {data_name}, {base['utts']} utts, {base['audio']:.1f} s audio; "
          f"fastest of {args.repeat} passes; mean hypothesis length {mean_chars:.1f} characters\n")
    print("| batch | utt/s | RTF | wall s | CPU s | encoder+C-Former s | rest (LLM generation) s | speed-up (wall) "
          "| speed-up (CPU) | speed-up of the rest | same hyps as batch %d |" % base["batch"])
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|")
    for r in results:
        rest, base_rest = r["wall"] - r["encoder"], base["wall"] - base["encoder"]
        print(f"| {r['batch']} | {r['utts'] / r['wall']:.2f} | {r['wall'] / r['audio']:.4f} | {r['wall']:.2f} | "
              f"{r['cpu']:.2f} | {r['encoder']:.2f} | {rest:.2f} | {base['wall'] / r['wall']:.1f}x | "
              f"{base['cpu'] / r['cpu']:.1f}x | {base_rest / rest:.1f}x | {'yes' if r['hyps'] == base['hyps'] else 'NO'} |")
    print(f"\ncommand: python bench/decode_throughput.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    return 0 if all(r["hyps"] == base["hyps"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
