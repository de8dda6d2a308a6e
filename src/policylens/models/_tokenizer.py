"""A byte-level instruction tokenizer: no vocabulary file, nothing to download.

Ids: 0 pad, 1 BOS, 2 EOS, 3 image placeholder, 4 + byte for each UTF-8 byte.
``encode`` builds the PaliGemma prompt layout ``[BOS, prompt bytes, "\\n"]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["ByteTokenizer"]


class ByteTokenizer:
    """UTF-8 bytes as tokens, right-padded to ``max_tokens``."""

    pad_id, bos_id, eos_id, image_id, offset = 0, 1, 2, 3, 4
    vocab_size = 4 + 256

    def __init__(self, max_tokens: int = 32) -> None:
        if max_tokens < 3:
            raise ValueError(f"ByteTokenizer: max_tokens={max_tokens} must be >= 3 (BOS, one byte, newline)")
        self.max_tokens = max_tokens

    def encode(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """``(input_ids, attention_mask)``, both ``(B, max_tokens)``; long prompts are cut."""
        ids = torch.full((len(texts), self.max_tokens), self.pad_id, dtype=torch.long)
        for row, text in enumerate(texts):
            body = [self.offset + b for b in text.encode("utf-8")][: self.max_tokens - 2]
            seq = [self.bos_id, *body, self.offset + ord("\n")]
            ids[row, : len(seq)] = torch.tensor(seq)
        return ids, (ids != self.pad_id).long()

    def decode(self, ids: Tensor) -> str:
        """The text of one row of ids (special tokens dropped)."""
        data = bytes(int(i) - self.offset for i in ids.tolist() if int(i) >= self.offset)
        return data.decode("utf-8", errors="replace").rstrip("\n")
