"""Videos of rendered frames (overlays, head grids over keyframes) with PyAV.

Frames stream into the encoder one at a time, so an iterator over a long episode never sits
in memory whole. The codec follows the file suffix and falls back along a short list when
this PyAV build lacks an encoder: the first frame is encoded under each candidate in turn
and the first that opens is kept. Encoding follows the DROID writer's MP4s
(yuv420p, rgb24 input); reading reuses ``policylens.data.read_video``.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from policylens.data import read_video

CODECS = {".mp4": ("libx264", "h264", "mpeg4"), ".webm": ("libvpx-vp9", "libvpx")}
# Encoders whose output these containers accept; listed in the error when none of the above opens.
_CONTAINER_CODECS = {
    ".mp4": ("libx264", "h264", "libopenh264", "libx265", "hevc", "mpeg4", "libsvtav1", "libaom-av1"),
    ".webm": ("libvpx-vp9", "vp9", "libvpx", "vp8", "libsvtav1", "libaom-av1"),
}
_OPTIONS = {  # keyed by the encoder's own name (``h264`` resolves to ``libx264`` in PyAV's wheels)
    "libx264": {"crf": "18", "preset": "veryfast"},
    "libvpx-vp9": {"crf": "30", "b": "0", "deadline": "realtime", "cpu-used": "8", "row-mt": "1"},
}
_BIT_RATE = 4_000_000  # for encoders without a constant-quality option here (mpeg4, libvpx)


def write_video(frames: Iterable[np.ndarray], path: str | Path, fps: float = 4, codec: str | None = None) -> Path:
    """Encode RGB frames, each (H, W, 3) uint8 and all one size, to ``path``; returns the path.

    ``.mp4`` -> H.264 (``libx264``, else ``h264``, else ``mpeg4``), ``.webm`` -> VP9
    (``libvpx-vp9``, else VP8 ``libvpx``); ``codec`` names one encoder instead of the list.
    Pixels are yuv420p, so an odd H or W is padded by one edge row/column to even. ``frames``
    may be a list, an array (T, H, W, 3) or an iterator; one frame is enough. On failure no
    partial file is left behind.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in CODECS:
        raise ValueError(f"path {path} has suffix {suffix!r}; expected one of {tuple(CODECS)} (H.264 or VP9)")
    if isinstance(fps, bool) or not isinstance(fps, int | float | Fraction) or not fps > 0:
        raise ValueError(f"fps={fps!r} must be a positive number of frames per second")
    rate = Fraction(fps).limit_denominator(1001)
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise ValueError(f"frames is empty: nothing to write to {path}; pass at least one (H, W, 3) uint8 frame")
    first = _check_frame(first, 0, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    container, stream = _open(path, (codec,) if codec else CODECS[suffix], rate, first)
    try:
        for i, frame in enumerate(it, start=1):
            _encode(container, stream, _check_frame(frame, i, first.shape), i)
        for packet in stream.encode():
            container.mux(packet)
        container.close()
    except BaseException:
        container.close()
        path.unlink(missing_ok=True)
        raise
    return path


def read_video_frames(path: str | Path) -> np.ndarray:
    """Decode every frame of a video written by ``write_video`` -> (N, H, W, 3) uint8."""
    frames, _ = read_video(Path(path))
    return frames


def available_codecs(suffix: str) -> list[str]:
    """Encoders in this PyAV build that can write a ``suffix`` ('.mp4' or '.webm') file."""
    found = []
    for name in _CONTAINER_CODECS.get(suffix.lower(), ()):
        try:
            av.Codec(name, "w")
        except (av.FFmpegError, ValueError):  # UnknownCodecError is a ValueError
            continue
        found.append(name)
    return found


def _open(path: Path, names: tuple[str, ...], rate: Fraction, first: np.ndarray):
    """Open ``path`` with the first encoder in ``names`` that encodes ``first``."""
    errors = []
    for name in names:
        container = av.open(str(path), mode="w")
        try:
            stream = container.add_stream(name, rate=rate)
            stream.height, stream.width = _even(first.shape[0]), _even(first.shape[1])
            stream.pix_fmt = "yuv420p"
            options = _OPTIONS.get(stream.codec_context.name)
            if options is None:
                stream.bit_rate = _BIT_RATE
            else:
                stream.options = dict(options)
            _encode(container, stream, first, 0)
            return container, stream
        except (av.FFmpegError, ValueError) as e:
            errors.append(f"{name}: {e}")
            container.close()
            path.unlink(missing_ok=True)
    raise RuntimeError(
        f"cannot write {path}: no encoder worked ({'; '.join(errors)}). "
        f"Encoders in this PyAV build for {path.suffix}: {available_codecs(path.suffix) or 'none'}; "
        "pass codec=<one of them>, use the other suffix, or install a PyAV wheel built with libx264 / libvpx"
    )


def _encode(container, stream, img: np.ndarray, index: int) -> None:
    H, W = stream.height, stream.width
    if img.shape[:2] != (H, W):  # odd size: repeat the last row / column
        img = np.pad(img, ((0, H - img.shape[0]), (0, W - img.shape[1]), (0, 0)), mode="edge")
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
    frame.pts = index
    for packet in stream.encode(frame):
        container.mux(packet)


def _check_frame(frame, index: int, shape: tuple[int, ...] | None) -> np.ndarray:
    img = np.asarray(frame)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or min(img.shape[:2]) < 1:
        raise ValueError(f"frames[{index}] must be RGB uint8 (H, W, 3), got {img.dtype} {img.shape}")
    if shape is not None and img.shape != shape:
        raise ValueError(
            f"frames[{index}] has shape {img.shape} but frames[0] has {shape}; a video needs one frame size"
        )
    return img


def _even(n: int) -> int:
    return n + n % 2
