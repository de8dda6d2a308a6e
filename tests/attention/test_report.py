"""The attention report: tables with intervals and n, success vs failure with Holm, optional
sections, embedded overlays, video links, the CLI command, and a render in headless Chromium."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from typer.testing import CliRunner

from policylens.attention import AttentionRunConfig, run_attention
from policylens.attention._report import _unpaired, write_report

CONFIG = AttentionRunConfig(layers=(1,), every=4, heads=False, videos=True)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """An attention run over 2 simulated episodes; the second is marked a failure."""
    from policylens.sim.pybullet import generate_episodes

    root = tmp_path_factory.mktemp("report")
    generate_episodes("reach", 2, root / "eps", seed=0, fmt="droid", image_size=112, progress=False)
    done = run_attention("tiny_vla", f"droid:{root / 'eps'}", root / "out", CONFIG, progress=False)
    marker = root / "out" / done[1]["folder"].split(str(root / "out") + "/")[1] / "done.json"
    record = json.loads(marker.read_text())
    marker.write_text(json.dumps({**record, "success": False}))
    return root / "out"


@pytest.fixture
def out(run_dir, tmp_path):
    return shutil.copytree(run_dir, tmp_path / "out")


def test_tables_n_images_and_video_links(out):
    html_path, md_path = write_report(out, n_boot=200)
    assert (html_path, md_path) == (out / "report.html", out / "report.md")
    page, md = html_path.read_text(), md_path.read_text()
    assert "tiny_vla" in page and "sha256:" in page and "2 (successes: 1, failures: 1)" in page
    for title in ("Attention mass per layer: prefix", "Attention mass per layer: suffix", "Success vs failure"):
        assert title in page and title in md
    for column in ("image[hand_camera]", "image[varied_camera_1]", "image (all)", "text", "first (sink)", "pad"):
        assert f"<th>{column}</th>" in page
    # every mass row states n: 2 episodes, and the keyframes of both episodes
    frames = sum(len(json.loads(p.read_text())["keyframes"]) for p in out.glob("*/*/*/done.json"))
    sections = {part.split("\n")[0]: part for part in md.split("\n## ")}
    for title in ("Attention mass per layer: prefix", "Attention mass per layer: suffix", "Success vs failure"):
        rows = [line for line in sections[title].splitlines() if line.startswith("| ") and "---" not in line]
        assert len(rows) == 1 + (2 if title == "Success vs failure" else 1), rows  # header + one row per phase/layer
        assert all(row.endswith(f"| 2 | {frames} |") for row in rows[1:]), rows
    assert "<svg" in page and "p (Holm)" in page
    # overlays embedded: one per (phase, layer) and outcome; no local file is needed to show them
    assert page.count("data:image/jpeg;base64,") == 4
    assert not re.search(r"src=['\"](?!data:)", page)
    for name in ("L01_prefix_max.webm", "L01_suffix_max.webm"):
        link = re.search(rf"href='([^']*{name})'", page)
        assert link and (out / link.group(1)).is_file() and not link.group(1).startswith("/")
        assert f"{name}](" in md


def test_mass_cells_match_the_stored_arrays(out):
    import zarr

    write_report(out, n_boot=50)
    groups = [zarr.open_group(str(p.parent / "attention.zarr"), mode="r") for p in sorted(out.glob("*/*/*/done.json"))]
    image = np.mean([g["mass/prefix_L1/image"][:].astype(np.float32).mean(1).mean() for g in groups])
    row = next(line for line in out.joinpath("report.md").read_text().splitlines() if line.startswith("| 1 |"))
    assert f"{image:.3f} [" in row  # the first table is prefix; its image (all) column is the episodes' mean


def test_unpaired_permutation_test_is_exact_for_small_groups():
    rng = np.random.default_rng(0)
    diff, p = _unpaired(np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0]), 100, 10000, rng)
    assert diff.estimate == -3.0 and diff.low <= -3.0 <= diff.high
    assert p == pytest.approx(2 / 20)  # of the 20 relabellings only the observed split and its mirror reach |3|
    diff, p = _unpaired(np.array([1.0]), np.array([2.0]), 100, 10000, rng)
    assert diff == -1.0 and p == 1.0  # one episode each: no interval, every relabelling is as extreme
    _, p = _unpaired(np.arange(12.0), np.arange(12.0) + 100, 100, 500, rng)  # comb(24, 12) > 500: sampled
    assert p == pytest.approx(1 / 501)


def test_optional_sections_and_their_shape(out):
    interval = {"estimate": 0.4, "low": 0.3, "high": 0.5}
    rows = [
        {"layer": 1, "phase": "prefix", "object": "red cube", "mass": interval, "n_episodes": 2, "n_frames": 9},
        # run_attention's own shape: m, m_low, m_high become one interval cell
        {"layer": 1, "phase": "prefix", "object": "target", "ratio": 1.5, "ratio_low": 1.2, "ratio_high": 1.8,
         "pointing": 0.5, "n_episodes": 2, "n_frames": 9},
    ]  # fmt: skip
    (out / "overlap.json").write_text(json.dumps(rows))
    drop = {"diff": 0.1, "low": 0.0, "high": 0.2, "p_value": 0.04}
    faith = [{"layer": 1, "phase": "suffix", "condition": "top-10%", "drop": drop, "n_episodes": 2, "n_frames": 9}]
    (out / "faithfulness.json").write_text(json.dumps({"note": "deletion of the top patches", "rows": faith}))
    page, md = (p.read_text() for p in write_report(out, n_boot=20))
    assert "Overlap (overlap.json)" in page and "red cube" in page and "0.400<br><small>[0.300, 0.500]" in page
    assert "| prefix | target | — | 1.500 [1.200, 1.800] | 0.500 | 2 | 9 |" in md and "ratio_low" not in md
    assert (
        "deletion of the top patches" in md and "| suffix | top-10% | +0.100 [+0.000, +0.200], p=0.04 | 2 | 9 |" in md
    )
    (out / "overlap.json").write_text(json.dumps([{"layer": 1, "phase": "prefix", "mass": 0.4}]))
    with pytest.raises(ValueError, match=r"overlap\.json: rows\[0\]\['n_episodes'\]"):
        write_report(out, n_boot=20)


def test_errors_name_the_folder_and_the_fix(tmp_path, out):
    with pytest.raises(FileNotFoundError, match="run.json not found"):
        write_report(tmp_path / "nothing")
    with pytest.raises(ValueError, match="n_boot=0"):
        write_report(out, n_boot=0)
    for marker in out.glob("*/*/*/done.json"):
        record = json.loads(marker.read_text())
        marker.write_text(json.dumps({**record, "success": True}))
    page = write_report(out, n_boot=20)[0].read_text()
    assert "Not computed: the run needs episodes of both outcomes." in page
    shutil.rmtree(out / "success")
    with pytest.raises(ValueError, match="holds no"):
        write_report(out)


def test_cli_report(out):
    from policylens.cli.main import app

    result = CliRunner().invoke(app, ["attention", "report", str(out), "--n-boot", "20", "--examples", "1"])
    assert result.exit_code == 0, result.output
    assert str(out / "report.html") in result.output and (out / "report.md").is_file()


def test_page_renders_in_headless_chromium(out, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (CI installs Debian's chromium: apt-get install -y chromium)")
    from PIL import Image

    html_path, _ = write_report(out, n_boot=50)
    moved = shutil.copy(html_path, tmp_path / "moved.html")  # self-contained: works away from the run folder
    shot = tmp_path / "report.png"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}", "--window-size=1280,2000"]
    proc = subprocess.run([*cmd, moved.as_uri()], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    assert pixels.shape == (2000, 1280, 3) and pixels.var() > 0
    # the overlays drew: saturated (coloured) pixels, not only black text on white
    spread = pixels.max(-1) - pixels.min(-1)
    assert (spread > 80).mean() > 0.01
