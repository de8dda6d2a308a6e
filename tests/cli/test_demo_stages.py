"""The demo says how many torch threads it used, times each stage and ends with its total and outputs."""

import io

import numpy as np
import pytest
import torch
from rich.console import Console

from policylens._demo import episode_batch, run_demo
from policylens.models import load_model


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_taps_only_demo_reports_threads_stages_and_total():
    buf = io.StringIO()
    torch.set_num_threads(2)
    result = run_demo(batch_size=1, jobs=False, threads=1, console=Console(file=buf, width=200))
    text = buf.getvalue()
    assert result.threads == 1 and torch.get_num_threads() == 1
    assert text.count("torch threads: 1") == 1 and text.startswith("torch threads: 1")
    assert list(result.seconds) == ["load policy", "simulate first frames", "taps"]
    assert all(s >= 0 for s in result.seconds.values())
    last = text.strip().splitlines()[-2:]
    assert last[0].startswith("demo took ") and all(f"{name} " in last[0] for name in result.seconds)
    assert last[1].startswith("outputs: none written") and result.out is None


def test_threads_none_leaves_torch_as_set_and_bad_threads_are_refused():
    torch.set_num_threads(1)
    buf = io.StringIO()
    assert run_demo(batch_size=1, jobs=False, console=Console(file=buf)).threads == 1
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="threads"):
            run_demo(batch_size=1, jobs=False, threads=bad, console=Console(file=io.StringIO()))


def test_taps_read_the_same_first_frames_as_a_fully_rendered_episode():
    """The demo renders only frame 0 of each episode; that frame equals frame 0 of a full rendering."""
    from policylens.sim.pybullet import make_training_episodes

    model = load_model("tiny_vla")
    batch, expert, instructions = episode_batch(model, 1, seed=0)
    cfg = model.config
    full = make_training_episodes(
        "reach", 1, seed=0, render=True, image_size=cfg.image_size, cameras=cfg.cameras, progress=False
    )[0]
    images = {c: torch.as_tensor(full["images"][c][:1]) for c in model.config.cameras}
    want = model.make_batch(images, [full["instruction"]], torch.as_tensor(full["proprio"][:1]))
    assert instructions == [full["instruction"]] and np.array_equal(expert[0], full["action"][0])
    assert batch.keys() == want.keys()
    for key in want:
        assert torch.equal(batch[key], want[key]), key
