"""Random states without pickle: exact round trips, named generators, names that clash."""

import json

import numpy as np
import pytest
import torch

from policylens.runs import join_generators, restore_rng_state, rng_state


def test_rng_state_round_trip_is_exact_for_an_mt19937_generator():
    g = np.random.Generator(np.random.MT19937(3))
    tensors, meta = rng_state({"mt": g})
    meta = json.loads(json.dumps(meta))  # as it comes back from train_state.json
    want = g.random(4).tolist()
    restore_rng_state(tensors, meta, {"mt": g})
    assert g.random(4).tolist() == want


def test_a_generator_missing_from_the_state_or_of_another_type_is_refused():
    tensors, meta = rng_state({"order": torch.Generator()})
    with pytest.raises(ValueError, match=r"no Generator 'rows' \(it holds \['order'\]\).*overwrite"):
        restore_rng_state(tensors, meta, {"rows": torch.Generator()})
    with pytest.raises(TypeError, match=r"generators\['x'\] is a int"):
        rng_state({"x": 3})


def test_global_states_are_read_without_drawing():
    torch.manual_seed(3), np.random.seed(3)
    rng_state()
    after = (torch.rand(2).tolist(), np.random.rand(2).tolist())
    torch.manual_seed(3), np.random.seed(3)
    assert (torch.rand(2).tolist(), np.random.rand(2).tolist()) == after


def test_join_generators_refuses_a_step_generator_with_the_loops_name():
    mine, loops = torch.Generator(), np.random.default_rng(0)
    assert join_generators({"noise": mine}, batches=loops) == {"noise": mine, "batches": loops}
    assert join_generators(None, batches=loops) == {"batches": loops}
    with pytest.raises(ValueError, match=r"generators: \['batches'\] name the loop's own generators"):
        join_generators({"batches": mine}, batches=loops)
