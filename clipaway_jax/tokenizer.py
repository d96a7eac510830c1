"""The CLIP BPE tokenizer: transformers' `CLIPTokenizer` reading a `tokenizer/` folder (no torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def load_tokenizer(folder: str | Path):
    try:
        from transformers import CLIPTokenizer
    except ImportError:
        raise ImportError("the tokenizer needs transformers: pip install 'clipaway-jax[tokenizer]'") from None
    folder = Path(folder)
    missing = [n for n in ("vocab.json", "merges.txt") if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: not a CLIP tokenizer folder (missing {', '.join(missing)})")
    return CLIPTokenizer.from_pretrained(str(folder))


def tokenize(tokenizer, texts: list[str] | str, max_length: int = 77) -> np.ndarray:
    """[B, max_length] int32 ids, padded and truncated as SD pipelines do."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    ids = tokenizer(texts, padding="max_length", max_length=max_length, truncation=True).input_ids
    return np.asarray(ids, dtype=np.int32)
