"""``TinyVLAConfig``: sizes of the reference VLA, validated on construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

__all__ = ["TinyVLAConfig"]


@dataclass
class TinyVLAConfig:
    """A PaliGemma-style VLA with a pi0-style flow-matching action expert.

    Defaults: 224×224 images through a patch-14 SigLIP tower (256 tokens per camera),
    two cameras (a side view and the wrist), a 4-layer Gemma decoder of width 128 and an
    action expert of width 64 that shares the decoder's attention (same depth, heads
    and head size), predicting chunks of ``chunk_size`` 7-D actions. ``use_state=False``
    blanks the proprio state token, so the policy must act from images and language alone
    (the proprio state lets a small policy copy its own motion instead of looking).
    """

    cameras: tuple[str, ...] = ("varied_camera_1", "hand_camera")
    image_size: int = 224
    patch_size: int = 14
    vision_width: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    width: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 1
    head_dim: int = 32
    expert_width: int = 64
    max_text_tokens: int = 32
    state_dim: int = 7
    action_dim: int = 7
    chunk_size: int = 8
    flow_steps: int = 10
    use_state: bool = True

    def __post_init__(self) -> None:
        self.cameras = tuple(self.cameras)
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"TinyVLAConfig.cameras={self.cameras!r} must be non-empty, unique camera names")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"TinyVLAConfig: image_size={self.image_size} is not a multiple of patch_size={self.patch_size}"
            )
        if self.heads % self.kv_heads:
            raise ValueError(f"TinyVLAConfig: heads={self.heads} is not a multiple of kv_heads={self.kv_heads}")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int) and not isinstance(value, bool) and value <= 0:
                raise ValueError(f"TinyVLAConfig.{f.name}={value} must be positive")

    @property
    def tokens_per_image(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def prefix_len(self) -> int:
        return len(self.cameras) * self.tokens_per_image + self.max_text_tokens

    def to_dict(self) -> dict:
        out = asdict(self)
        out["cameras"] = list(self.cameras)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> TinyVLAConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - {"type"})
        if unknown:
            raise ValueError(f"TinyVLAConfig: unknown fields {unknown}; known fields: {sorted(known)}")
        return cls(**{k: v for k, v in data.items() if k in known})
