"""One dataset syntax: ``synthetic:N | droid:PATH | lerobot:PATH | PATH``; a bare PATH gets the format
the data layer detects, and the manifest id names it, so both spellings make the same store."""

import pytest

from policylens.anchors import DATASET_FORMS, DATASET_HELP, parse_dataset
from policylens.data import EpisodeFormatError, open_episodes
from policylens.store import StoreError


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    from policylens.sim.pybullet import generate_episodes

    root = tmp_path_factory.mktemp("data")
    generate_episodes("reach", 1, root / "droid", seed=0, fmt="droid", image_size=56, progress=False)
    lerobot = generate_episodes("reach", 1, root / "lerobot", seed=0, fmt="lerobot", image_size=56, progress=False)[0]
    return {"droid": root / "droid", "lerobot": lerobot}


def test_the_help_names_every_form():
    assert DATASET_FORMS == "synthetic:N | droid:PATH | lerobot:PATH | PATH"
    for form in DATASET_FORMS.split(" | "):
        assert form in DATASET_HELP


def test_synthetic():
    spec = parse_dataset("synthetic:12")
    assert (spec.kind, spec.n, spec.id, spec.episodes) == ("synthetic", 12, "synthetic:12", [])
    for bad in ("synthetic:0", "synthetic:x", "synthetic:", "synthetic:-3"):
        with pytest.raises(StoreError, match=rf"--dataset='{bad}': N of synthetic:N must be a whole number >= 1"):
            parse_dataset(bad)


@pytest.mark.parametrize("fmt", ["droid", "lerobot"])
def test_a_bare_path_is_detected_and_named(datasets, fmt):
    path = str(datasets[fmt])
    bare, prefixed = parse_dataset(path), parse_dataset(f"{fmt}:{path}")
    assert bare.kind == prefixed.kind == fmt
    assert bare.id == prefixed.id == f"{fmt}:{path}"  # the manifest records the format
    assert [ep.path for ep in bare.episodes] == [ep.path for ep in open_episodes(f"{fmt}:{path}")]
    assert len(bare.episodes) == 1


def test_missing_and_empty_paths_fail_with_the_forms(tmp_path):
    for spec, what in (("droid:", "the PATH is empty"), (str(tmp_path / "nope"), "does not exist")):
        with pytest.raises(StoreError, match=f"{what}; expected synthetic:N \\| droid:PATH \\| lerobot:PATH \\| PATH"):
            parse_dataset(spec)
    with pytest.raises(StoreError, match="'lerobot:/no/such': /no/such does not exist"):
        parse_dataset("lerobot:/no/such")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EpisodeFormatError, match="no trajectory.h5 under it"):
        parse_dataset(str(tmp_path / "empty"))


def test_a_path_with_a_colon_is_a_path(tmp_path):
    with pytest.raises(StoreError, match="'runs:v2' does not exist|runs:v2 does not exist"):
        parse_dataset("runs:v2")  # not a form name: the whole text is a PATH
