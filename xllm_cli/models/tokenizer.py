"""Character-level tokenizer for the tiny preset (one token per character).

Built with the ``tokenizers`` library (WordLevel over single characters) and wrapped as a
``PreTrainedTokenizerFast`` so that it saves/loads with save_pretrained / AutoTokenizer like
any LLM tokenizer. The characters of the modality markers and default prompts are always
in the vocabulary, so prompts never turn into <unk>.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]
# text that the model itself puts in the LLM input (markers, default prompts)
BUILTIN_TEXT = "<image></image><speech></speech><video></video>请忠实地识别该语音根据图片视频描述这张。，？！ \n:"


def build_char_tokenizer(texts: Iterable[str], out_dir: str | Path | None = None, extra_text: str = BUILTIN_TEXT):
    """Char-level PreTrainedTokenizerFast over ``texts`` (+ ``extra_text``); saved to ``out_dir`` when given."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars: set[str] = set(extra_text)
    for t in texts:
        chars.update(t)
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in sorted(chars):
        if ch not in vocab:
            vocab[ch] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        padding_side="left",
    )
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        tok.save_pretrained(str(out_dir))
    return tok


def load_tokenizer(path: str | Path, trust_remote_code: bool = False):
    """Load an LLM's tokenizer from a local dir (or hub id).

    transformers maps some model types (e.g. qwen2) to their own tokenizer class whatever
    tokenizer_config.json says, which would replace our char-level pre-tokenizer; a generic
    fast tokenizer (``TokenizersBackend``/``PreTrainedTokenizerFast``) is therefore loaded as such.
    ``trust_remote_code`` is what the config asks; :mod:`xllm_cli.trust` decides.
    """
    import json

    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from xllm_cli.trust import trust_remote_code_for

    cfg_file = Path(path) / "tokenizer_config.json"
    if cfg_file.is_file():
        cls = json.loads(cfg_file.read_text(encoding="utf-8")).get("tokenizer_class")
        if cls in ("TokenizersBackend", "PreTrainedTokenizerFast") and (Path(path) / "tokenizer.json").is_file():
            return PreTrainedTokenizerFast.from_pretrained(str(path))
    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code_for(str(path),
                                                                                          trust_remote_code))
