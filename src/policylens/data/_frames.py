"""Frame I/O: MP4 encode/decode with PyAV, image-directory frames, 16-bit depth PNGs.

Sources decode on first access and keep the decoded frames (episodes are short); an
``index`` array maps step t -> stored frame index (used to align camera and control clocks).
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from PIL import Image

from ._episode import EpisodeFormatError


def write_video(path: Path, frames: np.ndarray, fps: int, codec: str = "libx264", crf: int = 18) -> None:
    """Encode frames (T, H, W, 3) uint8 as an MP4 (yuv420p; H and W must be even)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "veryfast"}
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def read_video(path: Path, window: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode an MP4 -> frames (N, H, W, 3) uint8 and presentation times (N,) seconds.

    With ``window`` (t0, t1) only frames with time in [t0, t1) are returned; the decoder seeks
    to the key frame before t0 first, so an episode inside a long shared file is cheap to read.
    """
    if not path.is_file():
        raise EpisodeFormatError(f"video file {path} is missing; expected an MP4 readable by PyAV")
    try:
        frames, times = _decode(path, window)
    except av.FFmpegError as e:
        raise EpisodeFormatError(
            f"video file {path} cannot be decoded ({e}); the file is truncated or damaged: re-copy or re-encode it"
        ) from e
    if not frames:
        raise EpisodeFormatError(f"video file {path} holds no frames in window {window}")
    return np.stack(frames), np.asarray(times)


def _decode(path: Path, window: tuple[float, float] | None) -> tuple[list, list]:
    eps = 1e-4
    frames, times = [], []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise EpisodeFormatError(f"video file {path} holds no video stream; it is truncated or not a video")
        stream = container.streams.video[0]
        if window is not None and window[0] > 0 and stream.time_base is not None:
            container.seek(int(window[0] / stream.time_base), stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            t = float(frame.time) if frame.time is not None else float(len(times))
            if window is not None:
                if t < window[0] - eps:
                    continue
                if t >= window[1] - eps:
                    break
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(t)
    return frames, times


class VideoFrames:
    """Frames of one MP4, optionally a time window [t0, t1) and a left-half crop (stereo)."""

    def __init__(
        self,
        path: Path,
        window: tuple[float, float] | None = None,
        left_half: bool = False,
        index: np.ndarray | None = None,
        length: int | None = None,
    ) -> None:
        self.path, self.window, self.left_half, self.index = Path(path), window, left_half, index
        self._length = length
        self._frames: np.ndarray | None = None

    def _load(self) -> np.ndarray:
        if self._frames is None:
            frames, _ = read_video(self.path, self.window)
            if self.left_half:
                frames = frames[:, :, : frames.shape[2] // 2]
            self._frames = frames
        return self._frames

    def __len__(self) -> int:
        if self.index is not None:
            return len(self.index)
        return self._length if self._length is not None else len(self._load())

    def __getitem__(self, t: int) -> np.ndarray:
        frames = self._load()
        i = int(self.index[t]) if self.index is not None else int(t)
        if not -len(frames) <= i < len(frames):
            raise IndexError(f"frame {t} is out of range: {self.path} holds {len(frames)} frames")
        return frames[i]


class ImageFrames:
    """Frames stored one file per step: ``directory/00000.<ext>``; ``kind`` rgb | label | depth_mm."""

    def __init__(self, directory: Path, length: int, kind: str = "rgb", ext: str = "jpg") -> None:
        if kind not in ("rgb", "label", "depth_mm"):
            raise ValueError(f"kind={kind!r} must be one of 'rgb', 'label', 'depth_mm'")
        self.directory, self.length, self.kind, self.ext = Path(directory), length, kind, ext

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, t: int) -> np.ndarray:
        if not 0 <= t < self.length:
            raise IndexError(f"frame {t} is out of range 0..{self.length - 1} in {self.directory}")
        path = self.directory / f"{t:05d}.{self.ext}"
        if not path.is_file():
            raise EpisodeFormatError(f"frame file {path} is missing; expected one file per step")
        try:
            with Image.open(path) as im:
                if self.kind == "rgb":
                    return np.asarray(im.convert("RGB"))
                arr = np.asarray(im)
        except OSError as e:  # PIL's UnidentifiedImageError and truncated-image errors
            raise EpisodeFormatError(f"frame file {path} is not a readable image ({e}); re-copy or re-export it") from e
        if self.kind == "label":
            return arr.astype(np.uint8)
        return arr.astype(np.float32) / 1000.0  # mm -> m


def write_image(path: Path, img: np.ndarray, kind: str = "rgb") -> None:
    """Write one frame: rgb -> JPEG/PNG by suffix, label -> 8-bit PNG, depth_mm -> 16-bit PNG (m in)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "depth_mm":
        mm = np.clip(np.round(np.asarray(img) * 1000.0), 0, 65535).astype(np.uint16)
        Image.fromarray(mm).save(path)
    elif kind == "label":
        Image.fromarray(np.asarray(img, dtype=np.uint8)).save(path)
    else:
        Image.fromarray(np.asarray(img, dtype=np.uint8)).save(path, quality=95)
