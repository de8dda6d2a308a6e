"""weights_hash against a reference built from the bytes by hand: names sorted, each entry's
``name|dtype|shape|`` then its little-endian values (bfloat16 as the top 16 bits of its float32)."""

import hashlib
import struct

import torch

from policylens.runs import weights_hash


def _reference(entries: dict[str, tuple[str, tuple[int, ...], bytes]]) -> str:
    h = hashlib.sha256()
    for name in sorted(entries):
        dtype, shape, data = entries[name]
        h.update(f"{name}|{dtype}|{shape}|".encode())
        h.update(data)
    return "sha256:" + h.hexdigest()


def _bf16(values: list[float]) -> bytes:  # exact for these values: their float32 low half is zero
    return b"".join(struct.pack("<I", struct.unpack("<I", struct.pack("<f", v))[0])[2:] for v in values)


STATE = {
    "w": torch.tensor([[1.5, -2.0], [0.25, 3.0]]),
    "a.bias": torch.tensor([7, -1], dtype=torch.int64),
    "half": torch.tensor([1.0, -0.5, 2.0], dtype=torch.bfloat16),
    "flag": torch.tensor(True),
}
EXPECTED = _reference(
    {
        "w": ("torch.float32", (2, 2), struct.pack("<4f", 1.5, -2.0, 0.25, 3.0)),
        "a.bias": ("torch.int64", (2,), struct.pack("<2q", 7, -1)),
        "half": ("torch.bfloat16", (3,), _bf16([1.0, -0.5, 2.0])),
        "flag": ("torch.bool", (), b"\x01"),
    }
)


def test_the_hash_is_sha256_over_names_dtypes_shapes_and_bytes():
    assert weights_hash(STATE) == EXPECTED


def test_order_views_and_modules_do_not_change_it_values_dtypes_and_shapes_do():
    assert weights_hash(dict(reversed(list(STATE.items())))) == EXPECTED
    assert weights_hash({**STATE, "w": STATE["w"].t().contiguous().t()}) == EXPECTED  # a strided view
    assert weights_hash({**STATE, "note": "not a tensor"}) == EXPECTED
    for changed in (
        {"w": STATE["w"] + 1e-7},
        {"w": STATE["w"].double()},
        {"w": STATE["w"].reshape(4)},
        {"a.bias": STATE["a.bias"].int()},
    ):
        assert weights_hash({**STATE, **changed}) != EXPECTED, changed
    model = torch.nn.Linear(2, 3)
    assert weights_hash(model) == weights_hash(model.state_dict()) == weights_hash(model.state_dict().copy())
