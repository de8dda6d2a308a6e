"""Run directories (run.json) and the signal flag of models._train_state."""

import json
import os
import signal
import threading

import pytest

from policylens.models._train_state import RUN_FILE, check_run_dir, claim_run_dir, stop_on_signal

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
