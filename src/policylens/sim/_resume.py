"""Resume an interrupted ``generate_episodes`` in the same folder.

``generate.json`` beside the episodes records each run written there: its settings, the index of
its first episode, how many it asked for and, as each DROID episode is finished, its index. The
same call again writes only the missing episodes; episode i's layout comes from the seed and i
alone, so the result equals an uninterrupted run. Other settings are refused, naming them;
``if_exists="overwrite"`` replaces the dataset, ``"append"`` (DROID) adds a run after it. A run
that finished no episode is dropped, so it never blocks a corrected call. LeRobot writes its files
at the end: an unfinished LeRobot run is started again. A policy's rollouts do not resume (its
sampling noise runs on across episodes): they are refused with the way out, ``--overwrite``.
A folder written before this record keeps the rules of ``prepare_output`` alone.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..data import prepare_output

__all__ = ["RECORD", "GenerationInterrupted", "GenerationPlan", "finished_episodes", "plan_generation"]

RECORD = "generate.json"
VERSION = "policylens-generate-1"


class GenerationInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``generate_episodes``: ``done`` of ``total`` episodes are kept in ``out``."""

    def __init__(self, done: int, total: int, out: Path, how: str) -> None:
        self.done, self.total, self.out = done, total, out
        super().__init__(f"{done} of {total} episodes done in {out}; {how}")


def _read(out: Path) -> dict | None:
    path = out / RECORD
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if not isinstance(record, dict) or record.get("format") != VERSION or not record.get("runs"):
        raise ValueError(f"{path}: not a record of generate_episodes ({VERSION}); move it away or pass --overwrite")
    return record


def _write(out: Path, record: dict) -> None:
    tmp = out / (RECORD + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, out / RECORD)  # atomic: a kill leaves the old record or the new one


def _set_aside(out: Path, mode: str, fmt: str) -> int:
    """``prepare_output`` on the dataset with the record set aside (restored if it refuses)."""
    path = out / RECORD
    text = path.read_text()
    path.unlink()
    try:
        return prepare_output(out, fmt, mode)
    except BaseException:
        path.write_text(text)
        raise


def _episode_dirs(out: Path, index: int) -> list[Path]:
    from ..data.droid import episode_dirname

    date, stamp = episode_dirname(index)
    return [out / outcome / date / stamp for outcome in ("success", "failure")]


def _remove_unfinished(out: Path, run: dict) -> None:
    """Delete the half-written DROID folders of ``run`` (its indices not marked done)."""
    done = set(run["done"])
    for i in range(run["first"], run["first"] + run["episodes"]):
        for folder in _episode_dirs(out, i) if i not in done else ():
            if folder.exists():
                shutil.rmtree(folder)
            for parent in (folder.parent, folder.parent.parent):  # empty date / outcome folders
                if parent.is_dir() and not any(parent.iterdir()):
                    parent.rmdir()


def _drop_empty_run(out: Path, record: dict) -> dict | None:
    """A last run that finished nothing is removed; the record that remains (None: none)."""
    run = record["runs"][-1]
    if run["done"]:
        return record
    if run["settings"]["format"] == "lerobot":  # its partial files are the whole dataset
        _set_aside(out, "overwrite", "lerobot")
        return None
    _remove_unfinished(out, run)
    record["runs"].pop()
    if not record["runs"]:
        (out / RECORD).unlink()
        return None
    _write(out, record)
    return record


@dataclass
class GenerationPlan:
    """The episodes one ``generate_episodes`` call writes into ``out`` (``todo``), and its record."""

    out: Path
    record: dict
    todo: list[int]
    resumable: bool

    @property
    def run(self) -> dict:
        return self.record["runs"][-1]

    @property
    def indices(self) -> range:
        return range(self.run["first"], self.run["first"] + self.run["episodes"])

    def paths(self) -> list[Path]:
        """The run's DROID episode folders (written now or before), in order."""
        return [next(d for d in _episode_dirs(self.out, i) if d.is_dir()) for i in self.indices]

    def write(self, record: Callable[[int], dict], writer=None, desc: str = "", progress: bool = True) -> list[Path]:
        """Record each episode of ``todo`` (``record(i)``: a recording for ``write_droid_episode``) and
        write it as DROID, marking it done, or to a LeRobot ``writer``, finalised at the end; the
        run's episode folders (DROID) or ``[dataset root]``."""
        from tqdm.auto import tqdm

        from ..data.droid import write_droid_episode

        total = self.run["episodes"]
        try:
            with tqdm(total=total, initial=total - len(self.todo), desc=desc, disable=not progress) as bar:
                for i in self.todo:
                    rec = record(i)
                    if writer is None:
                        write_droid_episode(self.out, rec, i)
                        self.mark_done(i)
                    else:
                        writer.add_episode(rec)
                    bar.update()
            if writer is not None:
                root = writer.finalize()
                self.mark_done(*self.indices)
                return [root]
        except BaseException as exc:
            err = self.abort(exc)  # half-written episodes removed; Ctrl-C says what was kept
            if err is exc:
                raise
            raise err from exc
        return self.paths()

    def mark_done(self, *indices: int) -> None:
        self.run["done"] = sorted({*self.run["done"], *indices})
        _write(self.out, self.record)

    def abort(self, exc: BaseException) -> BaseException:
        """After a failure: drop half-written episodes (and a run that finished nothing); the
        exception to raise (Ctrl-C becomes :class:`GenerationInterrupted`)."""
        run = self.run
        done, total, fmt = len(run["done"]), run["episodes"], run["settings"]["format"]
        if self.out.is_dir() and (self.out / RECORD).is_file():
            if fmt == "droid":
                _remove_unfinished(self.out, run)
            _drop_empty_run(self.out, self.record)
        if not isinstance(exc, KeyboardInterrupt):
            return exc
        if fmt == "lerobot":
            how = "a LeRobot dataset is written at the end; rerun the same command to start again"
        elif not self.resumable:
            how = f"a policy's rollouts do not resume; rerun with --overwrite to record all {total}"
        else:
            how = "rerun the same command to write the others" if done else "rerun the command to start again"
        return GenerationInterrupted(done, total, self.out, how)


def finished_episodes(out: str | Path) -> int:
    """Episodes of the last run in ``out`` that are finished (0: no record there)."""
    try:
        record = _read(Path(out))
    except (ValueError, OSError):
        return 0
    return len(record["runs"][-1]["done"]) if record else 0


def _differences(old: dict, new: dict) -> str:
    keys = [*new, *(k for k in old if k not in new)]
    return ", ".join(f"{k}={old.get(k)!r} (now {new.get(k)!r})" for k in keys if old.get(k) != new.get(k))


def plan_generation(
    out: str | Path, settings: dict, n_episodes: int, if_exists: str, resumable: bool = True
) -> GenerationPlan:
    """Check ``out`` against ``settings`` (with ``"format"``) and say which episodes to write."""
    out, fmt = Path(out), settings["format"]
    settings = json.loads(json.dumps(settings))  # tuples -> lists, as they come back from the file
    if out.is_dir():
        (out / (RECORD + ".tmp")).unlink(missing_ok=True)  # a kill between write and rename
    record = _read(out) if out.is_dir() else None
    if record is not None:
        record = _drop_empty_run(out, record)
    if record is not None and if_exists == "overwrite":
        first, record = _set_aside(out, "overwrite", fmt), None
    elif record is not None:
        run = record["runs"][-1]
        unfinished = len(run["done"]) < run["episodes"]
        if run["settings"] == settings and (if_exists == "error" or unfinished):
            return _resume(out, record, n_episodes, resumable)
        if if_exists == "error":
            raise FileExistsError(
                f"out_dir {out} already holds a {run['settings']['format']} dataset written with other settings "
                f"({_differences(run['settings'], settings)}); pass --overwrite (if_exists='overwrite') to replace "
                "it, --append (if_exists='append', DROID only) to add episodes, the same settings to resume, or "
                "another --out"
            )
        if unfinished and run["settings"]["format"] == "droid":  # appending after a cut-short run
            _remove_unfinished(out, run)
            run["episodes"] = len(run["done"])
        first = _set_aside(out, "append", fmt)
    else:
        first = prepare_output(out, fmt, if_exists)
    runs = record["runs"] if record is not None else []
    record = {"format": VERSION, "runs": [*runs, {"settings": settings, "first": first, "episodes": n_episodes}]}
    record["runs"][-1]["done"] = []
    out.mkdir(parents=True, exist_ok=True)
    _write(out, record)
    return GenerationPlan(out, record, list(range(first, first + n_episodes)), resumable)


def _resume(out: Path, record: dict, n_episodes: int, resumable: bool) -> GenerationPlan:
    run = record["runs"][-1]
    fmt, done = run["settings"]["format"], len(run["done"])
    if n_episodes < done:
        raise FileExistsError(
            f"out_dir {out} already holds a {fmt} dataset of {done} episodes with these "
            f"settings and --episodes {n_episodes} asks for fewer; pass --overwrite (if_exists='overwrite') to "
            "replace it, --append (if_exists='append', DROID only) to add episodes, or another --out"
        )
    todo = [i for i in range(run["first"], run["first"] + n_episodes) if i not in set(run["done"])]
    if todo and fmt == "lerobot":  # written at the end: nothing to keep
        _set_aside(out, "overwrite", fmt)
        return plan_generation(out, run["settings"], n_episodes, "error", resumable)
    if todo and not resumable:
        raise FileExistsError(
            f"out_dir {out} holds {done} of {run['episodes']} rollouts of a policy; they do not resume (the "
            "policy's sampling noise runs on across episodes); pass --overwrite to record them all again"
        )
    _remove_unfinished(out, run)
    run["episodes"] = n_episodes
    _write(out, record)
    return GenerationPlan(out, record, todo, resumable)
