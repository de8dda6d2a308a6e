"""``policylens cache`` commands (build / info / verify) through typer's CliRunner."""

import json
import shlex

import pytest
import torch
from _store_fixtures import build, flip
from typer.testing import CliRunner

import policylens.align  # noqa: F401  (registers the align kinds patch_grid / point_cloud)
from policylens.anchors import build_cache
from policylens.cli._cache import app, build_command
from policylens.data import EpisodeFormatError
from policylens.store import StoreError, StoreMeta, build_store, open_store, read_manifest

runner = CliRunner()


def test_info_and_verify_ok(tmp_path):
    build(tmp_path / "s", "hidden_state", "bfloat16")
    res = runner.invoke(app, ["info", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["kind"] == "hidden_state"
    assert info["complete"] == [[0, 37]]
    assert info["missing"] == []
    assert info["fields"]["teacher_hidden"] == {"shape": [3, 4, 8], "dtype": "bfloat16", "role": "feature"}
    res = runner.invoke(app, ["verify", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    assert "OK" in res.output
    assert "neighbour_cosine_mean" in res.output


def test_info_of_an_align_store_names_the_align_command(tmp_path):
    """``patch_grid`` stores print like any other; their rerun hint is ``align extract``, not ``cache build``."""
    meta = StoreMeta(kind="patch_grid", dataset_id="droid:runs/reach", dtype="float32", extra={"align": {"version": 2}})
    src = [{"i": i} for i in range(6)]
    build_store(tmp_path / "s", src, lambda b: {"patch_features": torch.ones(len(b["i"]), 1, 2, 2, 4)}, meta,
                chunk_rows=3, progress=False)  # fmt: skip
    assert build_command(str(tmp_path / "s")) is None
    (tmp_path / "s" / "done" / "chunk-00000001").unlink()
    res = runner.invoke(app, ["info", str(tmp_path / "s")])
    assert res.exit_code == 1 and json.loads(res.stdout)["kind"] == "patch_grid"
    assert "policylens align extract` / `align ingest` command" in res.stderr and "cache build" not in res.stderr


def test_verify_exits_nonzero_on_problems(tmp_path):
    build(tmp_path / "s", "hidden_feature")
    (tmp_path / "s" / "data" / "target_features" / "c" / "0" / "0").write_bytes(b"\0" * 3)
    res = runner.invoke(app, ["verify", str(tmp_path / "s")])
    assert res.exit_code == 1
    assert "problem" in res.output
    res = runner.invoke(app, ["verify", "--repair", str(tmp_path / "s")])
    assert res.exit_code == 1
    assert "removed done markers of chunks [0]" in res.output
    assert runner.invoke(app, ["info", str(tmp_path / "nothing")]).exit_code == 2  # bad input, not a bad store
    assert runner.invoke(app, ["verify", str(tmp_path / "nothing")]).exit_code == 1  # reported as a problem


def test_info_reports_a_missing_chunk_and_exits_nonzero(tmp_path):
    build(tmp_path / "s", "hidden_feature", store_inputs=["input_ids"])
    (tmp_path / "s" / "data" / "input_ids" / "c" / "1" / "0").unlink()
    res = runner.invoke(app, ["info", str(tmp_path / "s")])
    assert res.exit_code == 1
    info = json.loads(res.stdout)
    assert info["missing"] == [[8, 16]]
    assert info["complete"] == [[0, 8], [16, 37]]
    assert [(d["field"], d["chunk"], d["start"], d["stop"], d["problem"]) for d in info["damaged"]] == [
        ("input_ids", 1, 8, 16, "is missing")
    ]
    assert "field 'input_ids': chunk 1 (samples [8, 16)" in res.stderr
    assert f"policylens cache verify --repair {tmp_path / 's'}" in res.stderr
    (tmp_path / "s" / "done" / "chunk-00000003").unlink()  # an unfinished build: missing too
    res = runner.invoke(app, ["info", "--no-check", str(tmp_path / "s")])
    assert res.exit_code == 1
    assert json.loads(res.stdout)["missing"] == [[8, 16], [24, 32]]


def test_flipped_bytes_fail_verify_and_info_and_repair_names_the_build_that_restores(tmp_path):
    out = str(tmp_path / "c")
    command = ["build", "--dataset", "synthetic:3", "--dtype", "float32", "--batch-size", "2"]
    command += ["--store-input", "input_ids", "--out", out]
    assert runner.invoke(app, command).exit_code == 0
    chunk = tmp_path / "c" / "data" / "target_features" / "c" / "0" / "0"
    good = chunk.read_bytes()
    flip(chunk)
    res = runner.invoke(app, ["verify", out])
    assert res.exit_code == 1
    assert f"problem: field 'target_features': chunk 0 (samples [0, 2), file {chunk}) fails its crc32c" in res.output
    assert f"policylens cache verify --repair {out}" in res.output
    assert runner.invoke(app, ["info", out]).exit_code == 1
    assert runner.invoke(app, ["info", "--no-check", out]).exit_code == 0  # sizes are right

    res = runner.invoke(app, ["verify", "--repair", out])
    assert res.exit_code == 1
    assert "removed done markers of chunks [0] (samples [[0, 2]])" in res.output
    line = next(s for s in res.output.splitlines() if s.strip().startswith("policylens cache build"))
    args = shlex.split(line)[2:]  # after "policylens cache"
    expected = "build --policy tiny_vla --dataset synthetic:3 --kind hidden_feature --layer -2 --pooling "
    expected += "mean_image_tokens --dtype float32 --batch-size 2 --store-input input_ids --out"
    assert args == [*expected.split(), out]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert chunk.read_bytes() == good
    assert runner.invoke(app, ["verify", out]).exit_code == 0
    assert read_manifest(out)["complete"] == [[0, 3]]


def test_store_input_added_on_rerun_is_refused(tmp_path):
    out = str(tmp_path / "c")
    command = ["build", "--dataset", "synthetic:2", "--batch-size", "2", "--out", out]
    assert runner.invoke(app, command).exit_code == 0
    res = runner.invoke(app, [*command, "--store-input", "input_ids"])
    assert res.exit_code == 2  # a known error: one line, exit 2
    assert "built with different settings (store_inputs [] vs ['input_ids'])" in res.output
    assert "new --out path" in res.output
    assert "input_ids" not in read_manifest(out)["fields"]
    build(tmp_path / "s", store_inputs=["input_ids"])
    with pytest.raises(StoreError, match=r"store_inputs \['input_ids'\] vs \[\]"):  # and the other way round
        build(tmp_path / "s")


def _reference_feature(layer: int, batch: dict) -> torch.Tensor:
    """Plain reference: a forward hook on the decoder layer, mean over image tokens by hand."""
    from policylens.models import load_model

    torch.manual_seed(0)
    model = load_model("tiny_vla").eval()
    got = {}
    h = model.paligemma.language_model.layers[layer].register_forward_hook(
        lambda _m, _a, out: got.setdefault("h", out[0] if isinstance(out, tuple) else out)
    )
    with torch.no_grad():
        model.run_prefix(batch)
    h.remove()
    image = model.token_layout(batch)["prefix"]["image"][..., None]
    return (got["h"].float() * image).sum(1) / image.sum(1)  # (B, D)


def test_build_tiny_vla_matches_reference_and_resumes(tmp_path):
    out = str(tmp_path / "c")
    command = ["build", "--dataset", "synthetic:3", "--layer", "-2", "--dtype", "float32", "--batch-size", "2"]
    command += ["--store-input", "input_ids", "--out", out]
    res = runner.invoke(app, command)
    assert res.exit_code == 0, res.output
    assert "complete [[0, 3]]" in res.output
    ds = open_store(out)
    assert ds.meta["taps"] == ["llm.layers.-2.out"]
    assert ds.meta["pooling"] == "mean_image_tokens"
    assert ds.meta["weights_hash"].startswith("sha256:")
    from policylens.models import load_model

    torch.manual_seed(0)
    model = load_model("tiny_vla")
    batch = {
        k: torch.cat([model.example_batch(1, seed=i)[k] for i in range(3)])
        for k in ("pixel_values", "input_ids", "attention_mask", "state")
    }
    ref = _reference_feature(-2, batch)
    torch.testing.assert_close(ds[[0, 1, 2]]["target_features"], ref, atol=1e-4, rtol=1e-4)
    assert torch.equal(ds[[0, 1, 2]]["input_ids"], batch["input_ids"])
    chunk = tmp_path / "c" / "data" / "target_features" / "c" / "0" / "0"
    before = (chunk.read_bytes(), chunk.stat().st_mtime_ns)
    res = runner.invoke(app, command)
    assert res.exit_code == 0, res.output  # same command again: resume, nothing left to do
    assert (chunk.read_bytes(), chunk.stat().st_mtime_ns) == before  # not rewritten


def test_build_other_kinds_and_bad_dataset(tmp_path):
    m = build_cache(
        "tiny_vla",
        "synthetic:2",
        str(tmp_path / "h"),
        kind="hidden_state",
        layers=[1, 3],
        pooling="none",
        batch_size=2,
        progress=False,
    )
    from policylens.models import ByteTokenizer, load_model

    prefix = load_model("tiny_vla").config.prefix_len  # image tokens of every camera + text tokens
    assert m["fields"]["teacher_hidden"]["shape"] == [2, prefix, 128]
    assert build_command(str(tmp_path / "h")) == (
        f"policylens cache build --policy tiny_vla --dataset synthetic:2 --kind hidden_state --layer 1 --layer 3 "
        f"--pooling none --dtype float16 --batch-size 2 --out {tmp_path / 'h'}"
    )
    m = build_cache("tiny_vla", "synthetic:2", str(tmp_path / "t"), kind="token_level", batch_size=2, progress=False)
    assert m["fields"]["labels"] == {"shape": [prefix], "dtype": "int64", "role": "feature"}
    assert open_store(tmp_path / "t")[0]["labels"].max() < ByteTokenizer.vocab_size
    with pytest.raises(StoreError, match=r"--dataset='droid:/x': /x does not exist; expected synthetic:N \| droid"):
        build_cache("tiny_vla", "droid:/x", str(tmp_path / "x"), progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EpisodeFormatError, match="empty: no trajectory.h5 under it"):
        build_cache("tiny_vla", f"droid:{tmp_path / 'empty'}", str(tmp_path / "x"), progress=False)


def test_bridge_features_match_plain_hooks(tmp_path):
    """CRaFT [C_R ; C_AQ] from the CLI path equals means taken by hand from plain forward hooks."""
    from policylens.models import load_model

    m = build_cache("tiny_vla", "synthetic:2", str(tmp_path / "b"), kind="bridge", batch_size=2, progress=False)
    assert m["meta"]["bridge"]["raw_layer"] == 2
    assert m["meta"]["bridge"]["query_layer"] == 3
    assert m["meta"]["bridge"]["noise_per_sample"] and m["meta"]["bridge"]["noise_seed"] == 0
    assert m["meta"]["taps"] == ["llm.layers.2.out", "expert.layers.3.out"]
    assert build_command(str(tmp_path / "b")) == (
        f"policylens cache build --policy tiny_vla --dataset synthetic:2 --kind bridge --dtype float16 "
        f"--batch-size 2 --out {tmp_path / 'b'}"
    )
    torch.manual_seed(0)
    model = load_model("tiny_vla").eval()
    batch = {
        k: torch.cat([model.example_batch(1, seed=i)[k] for i in range(2)])
        for k in ("pixel_values", "input_ids", "attention_mask", "state")
    }
    got: dict = {}
    hooks = [
        model.paligemma.language_model.layers[2].register_forward_hook(
            lambda _m, _a, out: got.setdefault("raw", out[0] if isinstance(out, tuple) else out)
        ),
        model.expert.layers[3].register_forward_hook(
            lambda _m, _a, out: got.setdefault("query", out[0] if isinstance(out, tuple) else out)
        ),
    ]
    noise = torch.stack([torch.randn(model.noise_shape, generator=torch.Generator().manual_seed(i)) for i in (0, 1)])
    model.sample_actions(batch, noise=noise, steps=1)  # sample i's noise is seeded noise_seed + i
    for h in hooks:
        h.remove()
    image = model.token_layout(batch)["prefix"]["image"][..., None].float()
    c_r = (got["raw"] * image).sum(1) / image.sum(1)  # (B, 128)
    c_aq = got["query"][:, 1:].mean(1)  # (B, 64): the action-query tokens follow the state token
    ref = torch.cat([c_r, c_aq], -1).half()
    stored = open_store(tmp_path / "b")[[0, 1]]["target_features"]
    torch.testing.assert_close(stored.float(), ref.float(), atol=2e-3, rtol=2e-3)
    build_cache("tiny_vla", "synthetic:2", str(tmp_path / "b1"), kind="bridge", batch_size=1, progress=False)
    one_by_one = open_store(tmp_path / "b1")[[0, 1]]["target_features"]
    assert torch.equal(one_by_one, stored)  # a sample's features do not depend on its batch


def test_build_from_droid_and_lerobot_episodes(tmp_path):
    """Anchor caches over real episode files: every step of every episode becomes a sample."""
    from policylens.sim.pybullet import generate_episodes
    from policylens.store import open_store

    droid = tmp_path / "droid"
    generate_episodes("reach", 2, droid, seed=0, fmt="droid", image_size=56, progress=False)
    lerobot = generate_episodes("reach", 2, tmp_path / "lerobot", seed=0, fmt="lerobot", image_size=56, progress=False)[
        0
    ]
    stores = {}
    for spec in (f"droid:{droid}", f"lerobot:{lerobot}"):
        out = tmp_path / spec.split(":")[0] / "store"
        manifest = build_cache("tiny_vla", spec, str(out), batch_size=4, progress=False)
        stores[spec] = open_store(out)
        assert manifest["num_samples"] == len(stores[spec]) > 2
    droid_feats, lerobot_feats = (s[0]["target_features"] for s in stores.values())
    assert droid_feats.shape == lerobot_feats.shape == (128,)


def test_unknown_dataset_spec_lists_the_forms(tmp_path):
    with pytest.raises(StoreError, match=r"'imagenet': imagenet does not exist; expected synthetic:N \| droid:PATH \|"):
        build_cache("tiny_vla", "imagenet", str(tmp_path / "s"), progress=False)
