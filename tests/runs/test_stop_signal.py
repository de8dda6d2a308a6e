"""The signal flag: the first SIGINT / SIGTERM asks the loop to save and stop, a second interrupts."""

import os
import signal
import threading

import pytest

from policylens.runs import TrainingInterrupted, stop_on_signal


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


def test_training_interrupted_says_where_the_state_is_and_how_to_resume(tmp_path):
    exc = TrainingInterrupted(signal.SIGTERM, 7, tmp_path)
    assert isinstance(exc, KeyboardInterrupt) and (exc.signum, exc.step, exc.directory) == (signal.SIGTERM, 7, tmp_path)
    assert str(exc) == f"SIGTERM at step 7: state saved in {tmp_path}/train_state.*; rerun the same command to resume"
