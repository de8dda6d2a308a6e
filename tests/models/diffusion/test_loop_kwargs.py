"""``diffusion_loop_kwargs``: the shipped recipes' loop settings for a run folder (TensorBoard in
OUT/tb, warm-up 200 steps or the whole of a shorter run), written out by hand here."""

import pytest

from policylens.models.diffusion import diffusion_loop_kwargs


@pytest.mark.parametrize(("steps", "warmup"), [(1, 1), (150, 150), (200, 200), (201, 200), (12000, 200)])
def test_recipe_loop_settings(steps, warmup):
    data = {"task": "reach", "action_noise": 0.02}
    got = diffusion_loop_kwargs(
        "runs/x", steps, batch_size=64, lr=5e-4, save_every=500, run_settings=data, overwrite=True
    )
    assert got == {
        "log_dir": "runs/x/tb",
        "batch_size": 64,
        "lr": 5e-4,
        "warmup_steps": warmup,
        "out_dir": "runs/x",
        "save_every": 500,
        "run_settings": {"task": "reach", "action_noise": 0.02},
        "overwrite": True,
    }


def test_overwrite_defaults_off_and_steps_are_checked():
    assert diffusion_loop_kwargs("o", 10, batch_size=1, lr=1.0, save_every=1, run_settings={})["overwrite"] is False
    with pytest.raises(ValueError, match=r"diffusion_loop_kwargs: steps=0; expected at least 1"):
        diffusion_loop_kwargs("o", 0, batch_size=1, lr=1.0, save_every=1, run_settings={})
