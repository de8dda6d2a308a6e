"""Videos of rendered frames: MP4 (H.264) and WebM (VP9) round trips, fallbacks, clear errors."""

import numpy as np
import pytest

from policylens.attention import _video
from policylens.attention._video import available_codecs, read_video_frames, write_video

COLOURS = [(200, 50, 50), (50, 200, 50), (50, 50, 200)]
TOL = 6.0  # per-channel mean error allowed for lossy yuv420p codecs on flat colours


def _frames(h=32, w=48):
    return [np.full((h, w, 3), c, np.uint8) for c in COLOURS]


def _assert_means(back, colours):
    for img, colour in zip(back, colours, strict=True):
        np.testing.assert_allclose(img.reshape(-1, 3).mean(0), colour, atol=TOL)


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_three_frames_round_trip(tmp_path, suffix):
    path = write_video(_frames(), tmp_path / "sub" / f"clip{suffix}", fps=4)
    back = read_video_frames(path)
    assert back.shape == (3, 32, 48, 3) and back.dtype == np.uint8
    _assert_means(back, COLOURS)


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_one_frame_from_an_iterator_with_odd_size_is_padded_even(tmp_path, suffix):
    frame = np.full((33, 47, 3), COLOURS[0], np.uint8)
    back = read_video_frames(write_video(iter([frame]), tmp_path / f"one{suffix}"))
    assert back.shape == (1, 34, 48, 3)  # padded by repeating the last row / column
    _assert_means(back, COLOURS[:1])


def test_array_input_and_explicit_codec(tmp_path):
    frames = np.stack(_frames(16, 16))  # (T, H, W, 3)
    back = read_video_frames(write_video(frames, tmp_path / "clip.mp4", fps=2.5, codec="mpeg4"))
    assert back.shape == (3, 16, 16, 3)
    _assert_means(back, COLOURS)


def test_falls_back_when_the_first_encoder_is_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(_video.CODECS, ".mp4", ("no-such-encoder", "mpeg4"))
    back = read_video_frames(write_video(_frames(), tmp_path / "clip.mp4"))
    assert back.shape == (3, 32, 48, 3)


def test_no_working_encoder_names_path_and_available_codecs(tmp_path, monkeypatch):
    monkeypatch.setitem(_video.CODECS, ".mp4", ("no-such-encoder", "also-missing"))
    path = tmp_path / "clip.mp4"
    with pytest.raises(RuntimeError, match="no encoder worked") as info:
        write_video(_frames(), path)
    msg = str(info.value)
    assert str(path) in msg and "no-such-encoder" in msg and "also-missing" in msg
    assert str(available_codecs(".mp4")) in msg and "libx264" in available_codecs(".mp4")
    assert not path.exists()
    with pytest.raises(RuntimeError, match=r"no encoder worked.*libvpx-vp9"):
        write_video(_frames(), tmp_path / "clip.webm", codec="no-such-encoder")


def test_bad_inputs_are_named_and_leave_no_file(tmp_path):
    with pytest.raises(ValueError, match=r"suffix '\.avi'.*\.mp4"):
        write_video(_frames(), tmp_path / "clip.avi")
    with pytest.raises(ValueError, match="frames is empty"):
        write_video([], tmp_path / "clip.mp4")
    with pytest.raises(ValueError, match="fps=0"):
        write_video(_frames(), tmp_path / "clip.mp4", fps=0)
    with pytest.raises(ValueError, match=r"frames\[0\] must be RGB uint8"):
        write_video([np.zeros((8, 8), np.uint8)], tmp_path / "clip.mp4")
    frames = [*_frames(), np.zeros((16, 16, 3), np.uint8)]
    with pytest.raises(ValueError, match=r"frames\[3\] has shape \(16, 16, 3\) but frames\[0\] has"):
        write_video(frames, tmp_path / "clip.mp4")
    assert not (tmp_path / "clip.mp4").exists()
