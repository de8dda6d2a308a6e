"""Capture overhead on a PaliGemma-shaped model, as ratios to the plain SDPA forward.

Model: SigLIP 4 layers + Gemma 8 layers, width 256, built from ``transformers`` configs;
input: 3 cameras × 256 image tokens + 32 text tokens, batch 1. Every way is timed in
each of ``--rounds`` interleaved rounds; the table shows medians and p90s.

    python bench/tap_overhead.py [--rounds 7] [--device cpu|cuda] [--peers]
    python bench/tap_overhead.py --smoke        # one round at 56 px (seconds): a check, not a figure
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from transformers import GemmaConfig, PaliGemmaConfig, PaliGemmaForConditionalGeneration, SiglipVisionConfig

from policylens.tap import capture

HIDDEN = ["llm.layers.3.out", "llm.layers.-2.out"]
ATTN = ["llm.layers.3.attn.probs", "llm.layers.-2.attn.probs"]


def build(device: str, smoke: bool = False) -> tuple[torch.nn.Module, dict]:
    """The benchmark model; ``smoke`` shrinks images to 56 px (3 × 16 image tokens)."""
    torch.manual_seed(0)
    image_size = 56 if smoke else 224
    per_image = (image_size // 14) ** 2
    vision = SiglipVisionConfig(
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=14,
    )
    text = GemmaConfig(
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=8,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=64,
        vocab_size=1024,
    )
    cfg = PaliGemmaConfig(
        vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_id=1023, projection_dim=256
    )
    model = PaliGemmaForConditionalGeneration(cfg).eval().to(device)
    ids = torch.cat([torch.full((1, 3 * per_image), 1023), torch.randint(2, 1000, (1, 32))], 1).to(device)
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": torch.randn(3, 3, image_size, image_size, device=device),
    }
    return model, batch


def ways(model, batch, peers: bool) -> dict:
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    out = {}

    def plain():
        return model(**batch)

    def hidden():
        with capture(model, HIDDEN) as cap:
            model(**batch)
        return cap

    def hidden_attn():
        with capture(model, HIDDEN + ATTN) as cap:
            model(**batch)
        return cap

    def all_eager():
        return eager(**batch, output_hidden_states=True, output_attentions=True)

    out["plain forward (SDPA)"] = plain
    out["2 hidden-state taps"] = hidden
    out["2 hidden + 2 attention taps"] = hidden_attn
    out["usual way: all-layer eager + hidden states"] = all_eager
    if peers:
        try:
            from nnsight import NNsight

            wrapped = NNsight(model)
            layers = wrapped.model.language_model.layers

            def nnsight_two():
                with wrapped.trace(**batch):
                    first = layers[3].output.save()
                    second = layers[-2].output.save()
                return first, second

            out["nnsight: save 2 layer outputs"] = nnsight_two
        except ImportError:
            print("nnsight is not installed: its peer row is skipped (pip install nnsight)")
    return out


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--peers", action="store_true", help="add nnsight as a peer row if installed")
    parser.add_argument("--smoke", action="store_true", help="one round on a tiny model (a check, not a figure)")
    args = parser.parse_args()
    if args.smoke:
        args.rounds = 1
    model, batch = build(args.device, smoke=args.smoke)
    table = ways(model, batch, args.peers)
    times = {name: [] for name in table}
    with torch.no_grad():
        for fn in table.values():  # warm-up
            fn()
        for _ in range(args.rounds):
            for name, fn in table.items():
                sync(args.device)
                start = time.perf_counter()
                fn()
                sync(args.device)
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["plain forward (SDPA)"])
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"tap overhead, PaliGemma-shaped (SigLIP 4 + Gemma 8, width 256), "
        f"3×{(batch['input_ids'].shape[1] - 32) // 3} image + 32 text tokens, "
        f"batch 1, {device}, median of {args.rounds} interleaved rounds"
    )
    print(f"{'way':46s} {'median ms':>10s} {'p90 ms':>8s} {'× plain':>8s}")
    for name, ts in times.items():
        p90 = sorted(ts)[int(0.9 * (len(ts) - 1))]
        print(f"{name:46s} {1e3 * statistics.median(ts):10.1f} {1e3 * p90:8.1f} {statistics.median(ts) / base:8.2f}")
    med = {k: statistics.median(v) for k, v in times.items()}
    usual = med["usual way: all-layer eager + hidden states"] - base
    ours = med["2 hidden + 2 attention taps"] - base
    print(
        f"attention capture overhead beyond plain: ours {1e3 * ours:.1f} ms vs usual {1e3 * usual:.1f} ms "
        f"-> {ours / usual:.2f} of the usual way's overhead; usual / ours total time "
        f"{med['usual way: all-layer eager + hidden states'] / med['2 hidden + 2 attention taps']:.2f}×"
    )


if __name__ == "__main__":
    main()
