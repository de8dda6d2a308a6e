"""TinyVLA: a real PaliGemma prefix + flow-matching action expert."""

import numpy as np
import pytest
import torch

from policylens.models import TinyVLA, TinyVLAConfig, load_policy, save_policy
from policylens.tap import capture

SMALL = {"image_size": 28, "vision_layers": 1, "layers": 2, "max_text_tokens": 12, "chunk_size": 4, "flow_steps": 3}


@pytest.fixture
def vla():
    torch.manual_seed(0)
    return TinyVLA(TinyVLAConfig(**SMALL)).eval()


def test_default_config_gives_256_tokens_per_camera():
    cfg = TinyVLAConfig()
    assert cfg.tokens_per_image == 256 and len(cfg.cameras) == 2
    assert cfg.prefix_len == 2 * 256 + 32


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="patch_size"):
        TinyVLAConfig(image_size=30)
    with pytest.raises(ValueError, match="cameras"):
        TinyVLAConfig(cameras=("a", "a"))


def test_sampling_is_finite_and_deterministic_under_a_generator(vla):
    batch = vla.example_batch(2)
    g = torch.Generator().manual_seed(3)
    actions = vla.sample_actions(batch, generator=g)
    assert actions.shape == (2, 4, 7) and torch.isfinite(actions).all()
    g = torch.Generator().manual_seed(3)
    again = vla.sample_actions(batch, generator=g)
    torch.testing.assert_close(actions, again, rtol=0, atol=0)


def test_suffix_mask_state_does_not_see_actions(vla):
    batch = vla.example_batch(1)
    kv, valid = vla.run_prefix(batch)
    state = torch.zeros(1, 7)
    x1, x2 = torch.zeros(1, 4, 7), torch.ones(1, 4, 7)
    t = torch.tensor([0.5])
    with capture(vla, ["expert.layers.-1.out"]) as cap:
        vla.velocity(kv, valid, state, x1, t)
        vla.velocity(kv, valid, state, x2, t)
    h1, h2 = cap.calls("expert.layers.-1.out")
    torch.testing.assert_close(h1[:, 0], h2[:, 0], rtol=0, atol=1e-6)  # state token unchanged
    assert not torch.allclose(h1[:, 1:], h2[:, 1:])


def test_expert_taps_fire_once_per_flow_step(vla):
    batch = vla.example_batch(2)
    batch.update(
        vla.make_batch(
            {c: torch.zeros(2, 28, 28, 3, dtype=torch.uint8) for c in vla.config.cameras},
            ["reach the red cube", "go"],
            torch.zeros(2, 7),
        )
    )
    with capture(vla, ["expert.layers.0.attn.probs", "llm.layers.-1.out"]) as cap:
        vla(**batch)
    probs = cap.stacked("expert.layers.0.attn.probs")
    assert probs.shape == (3, 2, 4, 5, 2 * 4 + 12 + 5)  # steps, B, heads, suffix, prefix + suffix
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 2, 4, 5))
    valid = batch["attention_mask"].bool()
    assert (~valid[1]).sum() == 12 - 4
    assert probs[:, 1, :, :, : valid.shape[1]][..., ~valid[1]].abs().max() == 0  # no mass on padding
    with pytest.raises(KeyError, match="fired 3 times"):
        cap["expert.layers.0.attn.probs"]


def test_loss_trains(vla):
    vla.train()
    batch = vla.example_batch(4, with_action=True)
    opt = torch.optim.AdamW(vla.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    first = vla.loss(batch, generator=g).item()
    for _ in range(15):
        opt.zero_grad()
        vla.loss(batch, generator=torch.Generator().manual_seed(0)).backward()
        opt.step()
    assert vla.loss(batch, generator=torch.Generator().manual_seed(0)).item() < first


def test_loss_takes_given_noise_and_time(vla):
    batch = vla.example_batch(3, with_action=True)
    torch.manual_seed(5)
    drawn = vla.loss(batch, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(batch["action"].shape, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    time = torch.distributions.Beta(torch.tensor(1.5), torch.tensor(1.0)).sample((3,)) * 0.999 + 0.001
    assert torch.equal(vla.loss(batch, noise=noise, time=time), drawn)
    # by hand, in float64: the velocity at x_t = t noise + (1 - t) a against noise - a
    a = vla.normalize("action", batch["action"])
    x_t = time[:, None, None] * noise + (1 - time[:, None, None]) * a
    with torch.no_grad():
        kv, valid = vla.run_prefix(batch)
        v = vla.velocity(kv, valid, vla.normalize("state", batch["state"]), x_t, time).double()
    want = ((v - (noise - a).double()) ** 2).mean()
    assert abs(vla.loss(batch, noise=noise, time=2 * time / 3).item() - want.item()) > 1e-6  # time is used
    assert vla.loss(batch, noise=noise, time=time).item() == pytest.approx(want.item(), rel=1e-6)
    with pytest.raises(ValueError, match="noise and time together"):
        vla.loss(batch, noise=noise)


def test_save_load_round_trip(vla, tmp_path):
    vla.action_mean.fill_(0.25)
    save_policy(vla, tmp_path / "ckpt")
    loaded = load_policy(tmp_path / "ckpt")
    assert isinstance(loaded, TinyVLA) and loaded.config == vla.config
    batch = vla.example_batch(1)
    a = vla.sample_actions(batch, generator=torch.Generator().manual_seed(1))
    b = loaded.sample_actions(batch, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_load_policy_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_policy(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text('{"type": "mystery"}')
    with pytest.raises(ValueError, match="'type'='mystery'"):
        load_policy(tmp_path)


def test_make_batch_needs_every_camera(vla):
    with pytest.raises(KeyError, match="hand_camera"):
        vla.make_batch({"varied_camera_1": torch.zeros(1, 8, 8, 3, dtype=torch.uint8)}, ["go"], torch.zeros(1, 7))


def test_predict_chunk_from_one_observation(vla):
    obs = {
        "images": {c: np.zeros((40, 40, 3), dtype=np.uint8) for c in vla.config.cameras},
        "instruction": "reach the red cube",
        "proprio": np.zeros(7, dtype=np.float32),
    }
    chunk = vla.predict_chunk(obs, generator=torch.Generator().manual_seed(0))
    assert chunk.shape == (4, 7)
    batch = vla.make_batch(
        {c: torch.zeros(1, 40, 40, 3, dtype=torch.uint8) for c in vla.config.cameras},
        ["reach the red cube"],
        torch.zeros(1, 7),
    )
    ref = vla.sample_actions(batch, generator=torch.Generator().manual_seed(0))[0].numpy()
    np.testing.assert_array_equal(chunk, ref)


def test_use_state_false_ignores_the_state():
    torch.manual_seed(0)
    vla = TinyVLA(TinyVLAConfig(**SMALL, use_state=False)).eval()
    batch = vla.example_batch(1)
    a = vla.sample_actions(batch, generator=torch.Generator().manual_seed(0))
    batch["state"] = batch["state"] + 5.0
    b = vla.sample_actions(batch, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
