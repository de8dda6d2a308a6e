"""Run directories (run.json), the signal flag and the saved random states of policylens.runs."""

import json
import os
import random
import signal
import threading

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from policylens.runs import (
    RUN_FILE,
    check_run_dir,
    claim_run_dir,
    load_train_state,
    restore_rng_state,
    rng_state,
    save_train_state,
    stop_on_signal,
)

SETTINGS = {"model": {"width": 8, "cameras": ("a", "b")}, "train": {"lr": 1e-3, "seed": 0}}


def test_claim_records_then_recognises_the_same_run(tmp_path):
    assert claim_run_dir(tmp_path / "run", SETTINGS) is False
    record = json.loads((tmp_path / "run" / RUN_FILE).read_text())
    assert record == {
        "format": "policylens-run-1",
        "settings": {**SETTINGS, "model": {"width": 8, "cameras": ["a", "b"]}},
    }
    assert claim_run_dir(tmp_path / "run", SETTINGS) is True  # tuples and lists compare equal through JSON


def test_other_run_is_refused_with_the_differences(tmp_path):
    claim_run_dir(tmp_path, SETTINGS)
    (tmp_path / "train_state.json").write_text("{}")
    (tmp_path / "tb").mkdir()
    other = {"model": {"width": 16, "cameras": ["a", "b"]}, "train": {"lr": 1e-3, "seed": 0, "wd": 0.1}}
    with pytest.raises(FileExistsError, match=r"\(model.width 8 there, 16 now; train.wd unset there, 0.1 now\)"):
        claim_run_dir(tmp_path, other)
    assert check_run_dir(tmp_path, {"train": {"seed": 0}}, partial=True) is True  # only the keys given
    with pytest.raises(FileExistsError, match=r"train.seed 0 there, 1 now"):
        check_run_dir(tmp_path, {"train": {"seed": 1}}, partial=True)
    (tmp_path / "notes.txt").write_text("mine")
    assert claim_run_dir(tmp_path, other, overwrite=True) is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", RUN_FILE]  # run outputs only were deleted
    assert claim_run_dir(tmp_path, other) is True


def test_outputs_without_a_record_are_refused(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileExistsError, match=r"holds training outputs \['model.safetensors'\] but no run.json"):
        claim_run_dir(tmp_path, SETTINGS)
    (tmp_path / "unrelated.txt").write_text("x")
    (tmp_path / "model.safetensors").unlink()
    assert claim_run_dir(tmp_path, SETTINGS) is False  # unrelated files do not make a run


def test_first_signal_sets_the_flag_second_interrupts():
    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signal() as flag:
        assert flag.signum is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt, match="second SIGINT"):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before
    with stop_on_signal(enabled=False) as flag:
        assert signal.getsignal(signal.SIGTERM) is before and flag.signum is None


def test_outside_the_main_thread_no_handler_is_installed():
    seen = []

    def body():
        with stop_on_signal() as flag:
            seen.append((flag.signum, signal.getsignal(signal.SIGINT)))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [(None, signal.default_int_handler)]


def _draws(gens):
    """One draw from every generator a loop may use: torch's, numpy's and Python's global ones, and ``gens``."""
    return [
        torch.rand(3).tolist(),
        np.random.rand(3).tolist(),
        [random.random() for _ in range(3)],
        torch.rand(3, generator=gens["order"]).tolist(),
        gens["batches"].integers(0, 10**9, 3).tolist(),
    ]


def _gens(seed):
    return {"order": torch.Generator().manual_seed(seed), "batches": np.random.default_rng(seed)}


def test_random_states_are_saved_without_pickle_and_restored(tmp_path):
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    gens = _gens(1)
    _draws(gens)  # advance everything past its seed
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    save_train_state(tmp_path, model, opt, 3, generators=gens)
    want = _draws(gens)  # what the run draws after step 3
    torch.manual_seed(7), np.random.seed(7), random.seed(7)
    other = _gens(7)
    assert load_train_state(tmp_path, torch.nn.Linear(2, 2), torch.optim.AdamW(model.parameters()), other) == 3
    assert _draws(other) == want
    saved = json.loads((tmp_path / "train_state.json").read_text())["rng"]
    assert set(saved) == {"numpy", "python", "numpy_generators"} and list(saved["numpy_generators"]) == ["batches"]
    tensors = load_file(str(tmp_path / "train_state.safetensors"))
    assert tensors["rng.torch"].dtype == torch.uint8 and "rng.gen.order" in tensors
    assert not list(tmp_path.glob("*.pkl")) and not list(tmp_path.glob("*.pt"))


def test_rng_state_round_trip_is_exact_for_an_mt19937_generator():
    g = np.random.Generator(np.random.MT19937(3))
    tensors, meta = rng_state({"mt": g})
    meta = json.loads(json.dumps(meta))  # as it comes back from train_state.json
    want = g.random(4).tolist()
    restore_rng_state(tensors, meta, {"mt": g})
    assert g.random(4).tolist() == want


def test_a_state_without_the_named_generator_is_refused(tmp_path):
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    save_train_state(tmp_path, model, opt, 1, generators={"order": torch.Generator()})
    with pytest.raises(ValueError, match=r"no Generator 'rows' \(it holds \['order'\]\).*overwrite"):
        load_train_state(tmp_path, model, opt, {"rows": torch.Generator()})
    with pytest.raises(TypeError, match=r"generators\['x'\] is a int"):
        rng_state({"x": 3})
