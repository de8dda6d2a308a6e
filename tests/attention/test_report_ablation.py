"""The report's "What the policy uses" section (tables, the plot, one line per finding), an ablation-only
report, the faithfulness tests as a table, and the report's fixes: outcome rows equal to "all" left out
of the overlap table, no empty "failure" row of overlays, camera panes labelled; rendered in Chromium."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from policylens.attention import AblationConfig, AttentionRunConfig, run_ablation, run_attention, write_report
from policylens.models import TinyVLA, TinyVLAConfig


@pytest.fixture(scope="module")
def vla():
    torch.manual_seed(0)
    return TinyVLA(TinyVLAConfig(image_size=28, patch_size=14, layers=2, flow_steps=3)).eval()


@pytest.fixture(scope="module")
def folder(vla, tmp_path_factory):
    """An attention run over 2 simulated episodes (both successes), an ablation and faithfulness beside it."""
    from policylens.attention import run_faithfulness
    from policylens.sim.pybullet import generate_episodes

    root = tmp_path_factory.mktemp("report_ablation")
    generate_episodes("reach", 2, root / "eps", seed=0, fmt="droid", image_size=56, progress=False)
    eps = f"droid:{root / 'eps'}"
    run_attention(vla, eps, root / "out", AttentionRunConfig(layers=(1,), every=6, heads=False, videos=False),
                  progress=False)  # fmt: skip
    cfg = AblationConfig(conditions=("black", "instruction:empty"), layers=(1,), every=6, sim_episodes=2,
                         sim_batch=2, max_steps=3)  # fmt: skip
    run_ablation(vla, eps, root / "out", cfg, progress=False, n_boot=50)
    run_faithfulness(vla, eps, root / "out", layers=(1,), n_random=2, n_boot=50, progress=False)
    return root


@pytest.fixture
def out(folder, tmp_path):
    return shutil.copytree(folder / "out", tmp_path / "out")


def test_what_the_policy_uses_section(out):
    summary = json.loads((out / "ablation.json").read_text())
    page, md = (p.read_text() for p in write_report(out, n_boot=50))
    assert "What the policy uses (ablation.json)" in page and "What the policy uses (ablation.json)" in md
    assert page.count("data:image/png;base64,") == 1 and "![ablation per condition](ablation.png)" in md
    for caption in ("Closed loop: success per condition", "Open loop: action change per condition",
                    "Attention mass per condition and layer"):  # fmt: skip
        assert caption in page and caption in md
    findings = re.search(r"<ul class='findings'>(.*?)</ul>", page).group(1)
    lines = summary["findings"] or ["No interval excludes zero"]
    assert findings.count("<li>") == len(lines) and all(line[:40] in findings for line in lines)
    closed = [line for line in md.split("### Closed loop")[1].split("###")[0].splitlines() if line.startswith("| ")][1:]
    assert [line.split(" | ")[0] for line in closed] == [
        "| unablated", "| varied_camera_1:black", "| hand_camera:black", "| cameras:black", "| instruction:empty",
    ]  # fmt: skip
    assert all(line.endswith(" |") and " 2 | " in line for line in closed)  # every row states its n
    assert "Not available" not in page  # none of these conditions needs a missing-camera path


def test_faithfulness_tests_are_a_table_and_not_raw_json(out):
    page, md = (p.read_text() for p in write_report(out, n_boot=50))
    assert "Faithfulness tests (faithfulness.json)" in md and '"comparison"' not in page and "{'" not in page
    section = md.split("## Faithfulness tests")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    assert "comparison" in rows[0] and "p (Holm)" in rows[0] and len(rows) == 1 + 2 * 4  # header, 2 models x 4 tests
    assert "high − random" in md


def test_overlap_rows_equal_to_all_are_left_out(out):
    rows = json.loads((out / "overlap.json").read_text())
    assert {r["outcome"] for r in rows} == {"all", "success"}  # both episodes succeeded: success repeats all
    _, md = write_report(out, n_boot=50)
    table = md.read_text().split("## Overlap (overlap.json)")[1].split("\n## ")[0]
    outcomes = {line.split(" | ")[4] for line in table.splitlines() if line.startswith("| ") and "---" not in line}
    assert outcomes == {"outcome", "all"}


def test_overlays_label_cameras_and_skip_an_outcome_without_examples(out):
    page, md = (p.read_text() for p in write_report(out, n_boot=50))
    assert "class='label failure'" not in page and "class='label success'" in page
    panes = re.findall(r"<div class='panes'>(.*?)</div>", page)
    assert panes and all(p == "<span>varied_camera_1</span><span>hand_camera</span>" for p in panes)
    assert "(left to right: varied_camera_1 | hand_camera)" in md


def test_a_folder_with_only_an_ablation_gets_its_section(out, tmp_path):
    only = tmp_path / "only"
    only.mkdir()
    for name in ("ablation.json", "ablation.png"):
        shutil.copy(out / name, only / name)
    page, md = (p.read_text() for p in write_report(only, n_boot=20))
    assert "<h1>Ablation report</h1>" in page and "What the policy uses" in md and "Closed loop" in md
    with pytest.raises(FileNotFoundError, match="attention ablate --out OUT"):
        write_report(tmp_path / "nothing")
    res = CliRunner().invoke(
        __import__("policylens.cli.main", fromlist=["app"]).app, ["attention", "report", str(only)]
    )
    assert res.exit_code == 0 and str(only / "report.html") in res.output


def test_the_section_renders_in_headless_chromium(out, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (CI installs Debian's chromium: apt-get install -y chromium)")
    from PIL import Image

    from policylens.attention import plot_ablation, summarize_ablation

    only = tmp_path / "only"  # a closed loop of known outcomes: the bars must show
    only.mkdir()
    closed = {"none": {"success": [1] * 8 + [0] * 2, "length": [5] * 10},
              "cameras:black": {"success": [0] * 10, "length": [9] * 10}}  # fmt: skip
    summary = summarize_ablation([], closed, {"cameras:black": ("a", "b")}, ["a", "b"], n_boot=200)
    assert summary["findings"] and summary["findings"][0].startswith("cameras:black: success 0/10 against 8/10")
    conditions = [{"condition": "cameras:black", "available": True, "note": None},
                  {"condition": "a:removed", "available": False, "note": "no missing-camera path"}]  # fmt: skip
    (only / "ablation.json").write_text(json.dumps({"policy": "p", "conditions": conditions, **summary}))
    plot_ablation(summary, only / "ablation.png")
    html_path, _ = write_report(only)
    assert "Not available: a:removed: no missing-camera path." in html_path.read_text()
    moved = shutil.copy(html_path, tmp_path / "moved.html")  # self-contained: the plot is embedded
    shot = tmp_path / "shot.png"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}", "--window-size=1280,1600"]
    proc = subprocess.run([*cmd, moved.as_uri()], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int32)
    grey = (np.abs(pixels - [0x88, 0x88, 0x88]).sum(-1) < 20).mean()  # the unablated bar: 0.8 high
    assert grey > 0.002, grey
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", moved.as_uri()],
                         capture_output=True, text=True, timeout=120, check=False).stdout  # fmt: skip
    assert "What the policy uses" in dom and 'class="findings"' in dom
