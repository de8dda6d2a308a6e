"""Tiny random pi0 / pi0.5 as transformers ships them, built from configs offline, with a processor
whose tokenizer is a character-level vocabulary made here (nothing downloaded)."""

from __future__ import annotations

import torch

CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,.;:\n_-"
IMAGE_SIZE, PATCH = 28, 14  # a 2 x 2 patch grid: 4 image tokens per camera
CHUNK, STATE_DIM, MAX_DIM = 4, 7, 8


def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    for ch in CHARS:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def processor(variant: str):
    """``PI0Processor`` / ``PI05Processor`` with the PIL image processor policylens uses without torchvision."""
    from transformers import PI0Processor, PI05Processor

    from policylens.models import pi_image_processor

    images = pi_image_processor({"max_height": IMAGE_SIZE, "max_width": IMAGE_SIZE}, image_seq_length=4)
    stats = {"state_mean": [0.1] * STATE_DIM, "state_std": [2.0] * STATE_DIM}
    cls = PI0Processor if variant == "pi0" else PI05Processor
    return cls(image_processor=images, tokenizer=tokenizer(), max_state_dim=MAX_DIM, chunk_size=CHUNK, **stats)


def model(variant: str, image_token_id: int, vocab_size: int, seed: int = 0):
    """A tiny random ``PI0ForConditionalGeneration`` / ``PI05ForConditionalGeneration`` (eval mode).
    pi0.5's adaptive norms start as identity (zero ``dense``): re-initialised here so the time matters."""
    from transformers import PI0Config, PI0ForConditionalGeneration, PI05Config, PI05ForConditionalGeneration

    text = {
        "model_type": "gemma", "hidden_size": 32, "num_hidden_layers": 2, "intermediate_size": 64,
        "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 8, "vocab_size": vocab_size,
    }  # fmt: skip
    vision = {
        "model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "patch_size": PATCH, "image_size": IMAGE_SIZE, "vision_use_head": False,
    }  # fmt: skip
    vlm = {"text_config": text, "vision_config": vision, "projection_dim": 32, "image_token_id": image_token_id}
    dit = {"hidden_size": 16, "num_hidden_layers": 2, "intermediate_size": 32, "num_attention_heads": 4,
           "num_key_value_heads": 1, "head_dim": 8}  # fmt: skip
    common = {"vlm_config": vlm, "dit_config": dit, "chunk_size": CHUNK, "max_action_dim": MAX_DIM,
              "num_inference_steps": 3}  # fmt: skip
    torch.manual_seed(seed)
    if variant == "pi0":
        net = PI0ForConditionalGeneration(PI0Config(**common, max_state_dim=MAX_DIM))
    else:
        net = PI05ForConditionalGeneration(PI05Config(**common))
        with torch.no_grad():
            for name, p in net.named_parameters():
                if "layernorm.dense" in name or "norm.dense" in name:
                    p.normal_(0, 0.05)
    return net.eval()


def pair(variant: str, seed: int = 0):
    """(model, processor) that fit each other."""
    proc = processor(variant)
    return model(variant, proc.image_token_id, len(proc.tokenizer), seed), proc
