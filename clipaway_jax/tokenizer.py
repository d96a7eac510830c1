"""The CLIP BPE tokenizer, built with Hugging Face's `tokenizers` (no transformers, no torch) from a
checkpoint's `tokenizer/` folder (`vocab.json`, `merges.txt`, the special tokens of
`tokenizer_config.json` / `special_tokens_map.json`).

The pipeline is the one transformers' `CLIPTokenizer` builds (tests/test_tokenizer.py checks the ids on
over a thousand strings): NFC, whitespace runs to one space, lower case; CLIP's split pattern; byte-level
BPE with `</w>` ending each word; `<|startoftext|>` ... `<|endoftext|>` around the text; truncation and
padding to 77 as SD pipelines call it (`padding="max_length", truncation=True`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# CLIP's pre-tokenization: the special tokens, English contractions, letter runs, single digits, and runs
# of anything else that is not whitespace (transformers' CLIPTokenizer, verbatim).
SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
SPECIAL_DEFAULTS = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                    "pad_token": "<|endoftext|>"}  # fmt: skip


class ClipTokenizer:
    """`tokenizer(texts) -> [B, max_length] int32 ids`; `len(tokenizer)` is the vocabulary size."""

    def __init__(self, backend, max_length: int, pad_token: str):
        self.backend, self.max_length, self.pad_token = backend, max_length, pad_token

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def __call__(self, texts: list[str] | str, max_length: int | None = None) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        length = max_length or self.max_length
        backend = self.backend
        backend.enable_truncation(max_length=length)
        backend.enable_padding(length=length, pad_id=backend.token_to_id(self.pad_token), pad_token=self.pad_token)
        return np.asarray([e.ids for e in backend.encode_batch(texts)], dtype=np.int32).reshape(len(texts), length)


def load_tokenizer(folder: str | Path) -> ClipTokenizer:
    folder = Path(folder)
    missing = [n for n in ("vocab.json", "merges.txt") if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: not a CLIP tokenizer folder (missing {', '.join(missing)})")
    special, normalized, max_length = special_tokens(folder)
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    for role, token in special.items():
        if token not in vocab:
            raise ValueError(f"{folder / 'vocab.json'}: the {role} {token!r} is not in the vocabulary")
    merges = read_merges(folder / "merges.txt")
    return ClipTokenizer(build_backend(vocab, merges, special, normalized), max_length, special["pad_token"])


def special_tokens(folder: Path) -> tuple[dict[str, str], dict[str, bool], int]:
    """The special tokens by role (SD-1.5 pads with <|endoftext|>, SD-2 with "!"), whether each is matched
    after normalization (lower case), and model_max_length, read as transformers reads them: the roles of
    special_tokens_map.json, then tokenizer_config.json's; a token written as an AddedToken dict keeps its
    "normalized" flag, a plain string is matched as written, the last role naming a token decides, and
    tokenizer_config.json's added_tokens_decoder has the last word."""
    special, normalized, max_length = dict(SPECIAL_DEFAULTS), {}, 77
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        config = _read_json(folder / name)
        for role in special:
            token = config.get(role)
            if isinstance(token, dict) and isinstance(token.get("content"), str):  # {"__type": "AddedToken", ...}
                special[role], normalized[token["content"]] = token["content"], bool(token.get("normalized", True))
            elif isinstance(token, str):
                special[role], normalized[token] = token, False
        for added in config.get("added_tokens_decoder", {}).values():
            normalized[added["content"]] = bool(added.get("normalized", False))
        if isinstance(config.get("model_max_length"), int) and config["model_max_length"] <= 10_000:
            max_length = config["model_max_length"]  # (a missing limit is written as a huge number)
    return special, {t: normalized.get(t, False) for t in special.values()}, max_length


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def read_merges(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    merges = []
    for number, line in enumerate(lines, start=2):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}, line {number}: expected two symbols, found {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


def build_backend(vocab: dict[str, int], merges: list[tuple[str, str]], special: dict[str, str],
                  normalized: dict[str, bool]):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE

    backend = Tokenizer(BPE(vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="",
                            end_of_word_suffix="</w>", fuse_unk=False, unk_token=special["unk_token"]))  # fmt: skip
    backend.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])  # fmt: skip
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=n) for t, n in normalized.items()])
    bos, eos = special["bos_token"], special["eos_token"]
    backend.post_processor = processors.RobertaProcessing((eos, vocab[eos]), (bos, vocab[bos]), trim_offsets=False,
                                                          add_prefix_space=False)  # fmt: skip
    return backend


def tokenize(tokenizer: ClipTokenizer, texts: list[str] | str, max_length: int = 77) -> np.ndarray:
    """[B, max_length] int32 ids, padded and truncated as SD pipelines do."""
    return tokenizer(texts, max_length)
