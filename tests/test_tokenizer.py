"""The CLIP tokenizer (`tokenizers`, no transformers) gives exactly transformers' `CLIPTokenizer` ids, as SD
pipelines call it, on the real CLIP BPE (SD-1.5's and SD-2's special tokens) and on the mini world's."""

import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest

from clipaway_jax.pipelines.describe import TEMPLATES, read_vocab
from clipaway_jax.tiny import _bytes_to_unicode
from clipaway_jax.tokenizer import load_tokenizer, tokenize

ASSETS = Path(__file__).resolve().parent.parent / "clipaway_jax" / "assets"
CLIP_BPE = Path(__file__).resolve().parent / "data" / "clip_bpe_simple_vocab_16e6.txt.gz"
NEGATIVE = "monochrome, lowres, bad anatomy, worst quality, low quality"


def write_clip_tokenizer(folder: Path, pad_token: str) -> Path:
    """OpenAI CLIP's BPE in the layout of SD's `tokenizer/` folder: vocab.json and merges.txt built as CLIP's
    SimpleTokenizer builds them (49408 ids), the special tokens in the AddedToken form of the published
    tokenizer_config.json."""
    with gzip.open(CLIP_BPE) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    chars = list(_bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    added = lambda c: {"__type": "AddedToken", "content": c, "lstrip": False, "normalized": True, "rstrip": False,
                       "single_word": False}  # fmt: skip
    special = {"bos_token": added("<|startoftext|>"), "eos_token": added("<|endoftext|>"),
               "unk_token": added("<|endoftext|>"), "pad_token": pad_token}  # fmt: skip
    config = {"add_prefix_space": False, "do_lower_case": True, "errors": "replace", "model_max_length": 77,
              "tokenizer_class": "CLIPTokenizer", **special}  # fmt: skip
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return folder


PIECES = ["a", "photo", "of", "the", "Cat", "DOG", "traffic light", "résumé", "naïve", "Ångström", "façade",
          "São Paulo", "Zürich", "straße", "İstanbul", "Ελλάδα", "москва", "東京", "한국어", "مرحبا",
          "🐱", "🚀🚀", "👍🏽", "❤️",
          "2024", "3.14159", "1,000,000", "#42", "!!!", "?!", "...", "--", "(x)", "[y]", "{z}", "@user", "e-mail",
          "don't", "it's", "we're", "I'M", "you'll", "they'd", "I've", "ﬁne", "Ⅻ", "x²", "½", "\u00a0", "\u200b",
          "café\u0301", "<|endoftext|>", "<|startoftext|>", "_", "~", "$5", "100%", "a/b", "c:\\path", "'quoted'",
          '"double"', "tab\tbed", "new\nline", "  ", "\r\n"]  # fmt: skip


def varied_strings(count: int = 1200, seed: int = 0) -> list[str]:
    """The shipped vocabularies in DCGD's templates, the default negative prompt, edge cases, then random
    runs of the pieces above (mixed case, accents, non-Latin letters, emoji, digits, punctuation,
    whitespace runs) up to texts far longer than 77 tokens."""
    files = [ASSETS / "vocab" / f"{n}.txt" for n in ("objects", "scenes", "coco80")]
    files += [ASSETS / "mini" / "vocab" / f"{n}.txt" for n in ("objects", "scenes")]
    labels = [label for path in files for label in read_vocab(path)]
    rng = random.Random(seed)
    texts = ["", " ", "\t\n", NEGATIVE, NEGATIVE.upper(), " ".join(["word"] * 100), "!" * 200, "🐱" * 60]
    texts += [rng.choice(TEMPLATES).format(label) for label in labels]
    while len(texts) < count:
        words = [rng.choice(PIECES) for _ in range(rng.choice([1, 2, 3, 5, 8, 20, 60]))]
        words = [w.upper() if rng.random() < 0.15 else w.title() if rng.random() < 0.15 else w for w in words]
        texts.append("".join(w + rng.choice([" ", " ", "", "  ", ", ", "\t"]) for w in words))
    return texts


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizers")
    return {"sd15": write_clip_tokenizer(root / "sd15", "<|endoftext|>"),
            "sd2": write_clip_tokenizer(root / "sd2", "!"), "mini": ASSETS / "mini" / "tokenizer"}  # fmt: skip


@pytest.mark.parametrize("name", ["sd15", "sd2", "mini"])
def test_ids_equal_transformers_clip_tokenizer(folders, name):
    from transformers import CLIPTokenizer

    texts = varied_strings()
    assert len(texts) >= 1000 and len(set(texts)) > 900
    reference = CLIPTokenizer.from_pretrained(str(folders[name]))
    expected = np.asarray(reference(texts, padding="max_length", max_length=77, truncation=True).input_ids)
    ours = load_tokenizer(folders[name])
    ids = tokenize(ours, texts)
    assert ids.shape == (len(texts), 77) and ids.dtype == np.int32 and len(ours) == len(reference)
    wrong = [t for t, a, b in zip(texts, ids, expected, strict=True) if not np.array_equal(a, b)]
    assert not wrong, f"{len(wrong)} of {len(texts)} differ, e.g. {wrong[:3]}"
    ends = {ours.backend.token_to_id(t) for t in (ours.pad_token, "<|endoftext|>")}
    truncated = sum(row[-2] not in ends for row in ids)  # text reaches the last place before EOS
    assert truncated > 50, f"texts longer than 77 tokens are part of the comparison ({truncated})"


def test_sd2_pads_with_its_own_token(folders):
    ids = tokenize(load_tokenizer(folders["sd2"]), ["a cat"])[0]
    assert ids[0] == 49406 and ids[3] == 49407 and (ids[4:] == 0).all()  # <|startoftext|> a cat <|endoftext|> ! ...


def test_a_folder_without_merges_names_the_missing_file(tmp_path):
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"missing merges.txt"):
        load_tokenizer(tmp_path)


def test_a_special_token_outside_the_vocabulary_is_named(folders, tmp_path):
    import shutil

    broken = tmp_path / "tok"
    shutil.copytree(folders["mini"], broken)
    config = json.loads((broken / "tokenizer_config.json").read_text())
    (broken / "tokenizer_config.json").write_text(json.dumps(config | {"pad_token": "<pad>"}))
    with pytest.raises(ValueError, match=r"tokenizer_config.json|vocab.json.*pad_token '<pad>'"):
        load_tokenizer(broken)
