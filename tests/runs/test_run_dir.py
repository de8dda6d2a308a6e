"""Run directories: run.json records the settings, the same settings resume, others are refused
with the settings that differ, overwrite deletes the run's outputs only; a kind of run names its outputs."""

import json

import pytest

from policylens.runs import (
    RUN_FILE,
    RunDirError,
    RunKind,
    check_run_dir,
    claim_run_dir,
    clear_run_dir,
    recorded_settings,
)

SETTINGS = {"model": {"width": 8, "cameras": ("a", "b")}, "train": {"lr": 1e-3, "seed": 0}}
# a run that writes folders and records its settings flat (the attention job's layout)
FLAT = RunKind("attention", (RUN_FILE, "summary.json", "success"), flat=True, indent=2)


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


def test_settings_recorded_only_when_set_are_compared_under_partial_too(tmp_path):
    optional = {"train.every": 1}
    claim_run_dir(tmp_path / "plain", SETTINGS)  # recorded before the setting existed: at its default
    (tmp_path / "plain" / "train_state.json").write_text("{}")
    assert check_run_dir(tmp_path / "plain", {"train": {"seed": 0}}, partial=True, defaults=optional) is True
    assert check_run_dir(tmp_path / "plain", {"train": {"seed": 0, "every": 1}}, partial=True, defaults=optional)
    with pytest.raises(FileExistsError, match=r"train.every unset there, 4 now"):
        check_run_dir(tmp_path / "plain", {"train": {"seed": 0, "every": 4}}, partial=True, defaults=optional)
    claim_run_dir(tmp_path / "every", {**SETTINGS, "train": {**SETTINGS["train"], "every": 4}})
    (tmp_path / "every" / "train_state.json").write_text("{}")
    assert check_run_dir(tmp_path / "every", {"train": {"seed": 0}}, partial=True) is True  # without defaults
    with pytest.raises(FileExistsError, match=r"train.every 4 there, unset now"):
        check_run_dir(tmp_path / "every", {"train": {"seed": 0}}, partial=True, defaults=optional)


def test_outputs_without_a_record_are_refused(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileExistsError, match=r"holds training outputs \['model.safetensors'\] but no run.json"):
        claim_run_dir(tmp_path, SETTINGS)
    (tmp_path / "unrelated.txt").write_text("x")
    (tmp_path / "model.safetensors").unlink()
    assert claim_run_dir(tmp_path, SETTINGS) is False  # unrelated files do not make a run


def test_a_refusal_is_a_file_exists_error_and_a_value_error_naming_the_keys(tmp_path):
    claim_run_dir(tmp_path, SETTINGS)
    with pytest.raises(RunDirError) as info:
        claim_run_dir(tmp_path, {**SETTINGS, "train": {"lr": 1e-2, "seed": 1}})
    assert isinstance(info.value, FileExistsError) and isinstance(info.value, ValueError)
    msg = str(info.value)
    assert msg.startswith(f"{tmp_path / RUN_FILE} records another run: train.lr, train.seed differ (")
    assert "train.lr 0.001 there, 0.01 now; train.seed 0 there, 1 now" in msg and "--overwrite" in msg
    assert "\n" not in msg


def test_recorded_settings_read_back_what_was_claimed(tmp_path):
    assert recorded_settings(tmp_path) is None
    claim_run_dir(tmp_path, SETTINGS)
    assert recorded_settings(tmp_path) == json.loads(json.dumps(SETTINGS))
    (tmp_path / RUN_FILE).write_text("{broken")
    with pytest.raises(ValueError, match=f"{tmp_path / RUN_FILE} is not valid JSON"):
        recorded_settings(tmp_path)


def test_a_flat_kind_records_the_settings_themselves_and_clears_its_folders(tmp_path):
    settings = {"layers": [1], "camera_map": {"a": "b"}}
    assert claim_run_dir(tmp_path, settings, kind=FLAT) is False
    assert (tmp_path / RUN_FILE).read_text() == json.dumps(settings, indent=2) + "\n"
    assert claim_run_dir(tmp_path, settings, kind=FLAT) is True
    with pytest.raises(ValueError, match=r"layers differ \(layers \[1\] there, \[2\] now\).*--overwrite"):
        claim_run_dir(tmp_path, {**settings, "layers": [2]}, kind=FLAT)
    with pytest.raises(ValueError, match=r"camera_map.a, camera_map.c differ"):
        check_run_dir(tmp_path, {**settings, "camera_map": {"c": "b"}}, kind=FLAT)
    (tmp_path / "success" / "ep0").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("mine")
    assert claim_run_dir(tmp_path, {"layers": [2]}, overwrite=True, kind=FLAT) is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", RUN_FILE]
    clear_run_dir(tmp_path, FLAT)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_a_flat_kind_refuses_its_outputs_without_a_record(tmp_path):
    (tmp_path / "success").mkdir()
    with pytest.raises(RunDirError, match=r"holds attention outputs \['success'\] but no run.json"):
        claim_run_dir(tmp_path, {"layers": [1]}, kind=FLAT)


def test_a_kind_lists_its_run_file_among_its_outputs():
    with pytest.raises(ValueError, match="list 'run.json' among the outputs"):
        RunKind("other", ("model.safetensors",))
