"""A Monitor's snapshots on disk, and reading them back while the run goes on (`RunLog`, `compare_runs`).

The format is open: JSON and numpy's ``.npz``. A logdir holds

- ``run.json``: what every snapshot shares (`FORMAT`, `VERSION`, method, options, layer, units, every, the
  model's class name, the number of ranks, when it was created, and ``finished``: null while the run goes on);
- per snapshot ``snapshot-000003.npz`` (``scores``, ``order``, ``alive``, and ``tiebreak`` where the method
  breaks ties) and then ``snapshot-000003.json`` (step, seconds, the ranking's method, layer, target and
  ``meta`` as JSON, the npz's name). Snapshots are numbered in the order taken, not by step: two taken at one
  step (``snapshot()`` after ``step()``) are both kept.

Every file is written under a temporary name in the same directory and renamed into place (`os.replace`,
atomic), and a snapshot's JSON is written after its npz: a reader loads a snapshot only once its JSON exists,
so it never sees half a file or half a snapshot. This module is part of the widget-free core.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neuronwidgets.ranking import Ranking, _jsonable, compare

FORMAT = "neuronwidgets run"
VERSION = 1
RUN_FILE = "run.json"
_SNAPSHOT = re.compile(r"snapshot-(\d{6,})\.json")


@dataclass(frozen=True)
class Snapshot:
    """One ranking taken during training, with the fraction of images on which each unit was active."""

    step: int
    ranking: Ranking
    alive: np.ndarray  # (units,) fraction of monitoring images where the unit's peak activation is > 0
    seconds: float


class History:
    """What a list of snapshots tells (shared by `Monitor`, which takes them, and `RunLog`, which reads them):
    subclasses keep ``history``, oldest first."""

    history: list[Snapshot]

    @property
    def steps(self) -> list[int]:
        return [s.step for s in self.history]

    def ranks(self) -> np.ndarray:
        """(snapshots, units): each unit's rank (0 = most important) at each snapshot."""
        return np.stack([np.argsort(s.ranking.order) for s in self.history]) if self.history else np.zeros((0, 0))

    def stability(self) -> list[float]:
        """Spearman correlation of each snapshot's ranking with the previous one."""
        return [compare(a.ranking, b.ranking)["spearman"] for a, b in zip(self.history, self.history[1:])]

    def died(self) -> list[int]:
        """Units active on some monitoring image in the first snapshot and on none in the last."""
        if len(self.history) < 2:
            return []
        return np.flatnonzero((self.history[0].alive > 0) & (self.history[-1].alive == 0)).tolist()

    def emerged(self) -> list[int]:
        """Units inactive on every monitoring image in the first snapshot and active in the last."""
        if len(self.history) < 2:
            return []
        return np.flatnonzero((self.history[0].alive == 0) & (self.history[-1].alive > 0)).tolist()


def _replace_into(path: Path, write: Callable[[Any], None]) -> None:
    """Write ``path`` whole or not at all: ``write(file)`` fills a temporary file beside it, renamed over it."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide the run from a notebook run by another user
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _write_json(path: Path, value: Any) -> None:
    text = json.dumps(value, indent=1, allow_nan=False).encode()
    _replace_into(path, lambda file: file.write(text))


class RunWriter:
    """Writes one run's files into ``logdir`` (made if missing); refuses a directory that already holds a run,
    whose snapshots would mix with the new ones."""

    def __init__(self, logdir: str | os.PathLike, run: dict[str, Any]) -> None:
        self.path = Path(logdir)
        if (self.path / RUN_FILE).exists():
            raise FileExistsError(
                f"{self.path} already holds a run ({RUN_FILE}); give each run its own logdir, or delete that one"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        self.run = {"format": FORMAT, "version": VERSION, **_jsonable(run), "created": time.time(), "finished": None}
        _write_json(self.path / RUN_FILE, self.run)
        self.written = 0

    def write(self, snapshot: Snapshot) -> None:
        """The snapshot's npz, then its JSON (the reader's sign that the snapshot is complete)."""
        name = f"snapshot-{self.written:06d}"
        ranking = snapshot.ranking
        arrays = {"scores": ranking.scores, "order": ranking.order, "alive": np.asarray(snapshot.alive)}
        if ranking.tiebreak is not None:
            arrays["tiebreak"] = ranking.tiebreak
        _replace_into(self.path / f"{name}.npz", lambda file: np.savez(file, **arrays))
        record = {
            "step": snapshot.step,
            "seconds": snapshot.seconds,
            "arrays": f"{name}.npz",
            "ranking": {"method": ranking.method, "layer": ranking.layer, "target": ranking.target},
            "meta": _jsonable(ranking.meta),
        }
        _write_json(self.path / f"{name}.json", record)
        self.written += 1

    def finish(self) -> None:
        """Mark the run finished in ``run.json`` (readers stop polling)."""
        if self.run["finished"] is None:
            self.run["finished"] = time.time()
            _write_json(self.path / RUN_FILE, self.run)


class RunLog(History):
    """A logdir written by ``Monitor(..., logdir=...)``, read while the run goes on or after it ended.

    `refresh()` loads the snapshots written since the last call; `history` and the `History` methods read as a
    Monitor's do. ``finished`` is the time the run was closed (``Monitor.close()``), None while it goes on (or
    if its script stopped without closing it).
    """

    def __init__(self, logdir: str | os.PathLike) -> None:
        self.path = Path(logdir)
        self.history: list[Snapshot] = []
        self.run = self._read_run()
        self.method: str = self.run["method"]
        self.layer: str = self.run["layer"]
        self.units: int = self.run["units"]
        self.every: int = self.run["every"]
        self.options: dict[str, Any] = self.run["options"]
        self.refresh()

    def __repr__(self) -> str:
        state = "finished" if self.finished else "live"
        return f"RunLog({str(self.path)!r}, {self.method} of {self.layer!r}, {len(self.history)} snapshots, {state})"

    @property
    def finished(self) -> float | None:
        return self.run.get("finished")

    def _read_run(self) -> dict[str, Any]:
        file = self.path / RUN_FILE
        if not self.path.is_dir():
            raise FileNotFoundError(
                f"no logdir {str(self.path)!r}: expected a directory written by nw.Monitor(..., logdir=...)"
            )
        if not file.is_file():
            raise FileNotFoundError(
                f"{str(self.path)!r} holds no {RUN_FILE}: expected a directory written by nw.Monitor(..., logdir=...) "
                "(its run.json is written when the Monitor is made)"
            )
        try:
            run = json.loads(file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{file} is not JSON ({err})") from None
        if not isinstance(run, dict) or run.get("format") != FORMAT:
            raise ValueError(f"{file} is not a neuronwidgets run: its 'format' is not {FORMAT!r}")
        if run.get("version") != VERSION:
            raise ValueError(
                f"{file} has format version {run.get('version')!r}; this neuronwidgets reads version {VERSION} "
                "only (upgrade neuronwidgets to read a newer run)"
            )
        return run

    def refresh(self) -> int:
        """Load the snapshots written since the last call (complete ones only) and re-read ``finished``;
        returns how many were new."""
        if not self.finished:
            self.run = self._read_run()
        found = sorted(int(m[1]) for m in (_SNAPSHOT.fullmatch(p.name) for p in self.path.iterdir()) if m)
        new = 0
        for number in found[len(self.history) :]:
            if number != len(self.history):  # numbered in order: a gap is a snapshot still being written
                break
            self.history.append(self._load(number))
            new += 1
        return new

    def _load(self, number: int) -> Snapshot:
        file = self.path / f"snapshot-{number:06d}.json"
        record = json.loads(file.read_text(encoding="utf-8"))
        arrays_file = self.path / record["arrays"]
        if not arrays_file.is_file():
            raise FileNotFoundError(f"{file} names {arrays_file.name}, which is missing: the logdir was changed")
        with np.load(arrays_file) as arrays:
            scores, alive = arrays["scores"], arrays["alive"]
            tiebreak = arrays.get("tiebreak")
        ranking = Ranking(scores, tiebreak=tiebreak, meta=record["meta"], **record["ranking"])
        return Snapshot(record["step"], ranking, alive, record["seconds"])


def compare_runs(*logdirs: str | os.PathLike, k: int = 10) -> dict[str, Any]:
    """The final rankings of several runs of the same layer, and each one's agreement (`compare`, top ``k``)
    with the first's: ``{"runs": [RunLog, ...], "agreement": [None, {spearman, kendall, top_k_overlap}, ...]}``.
    A run without snapshots is refused."""
    if len(logdirs) < 2:
        raise ValueError(f"compare_runs needs at least two logdirs, got {len(logdirs)}")
    runs = [RunLog(logdir) for logdir in logdirs]
    empty = [str(run.path) for run in runs if not run.history]
    if empty:
        raise ValueError(f"no snapshots yet in {', '.join(empty)}: nothing to compare")
    first = runs[0].history[-1].ranking
    agreement = [None] + [compare(first, run.history[-1].ranking, k=k) for run in runs[1:]]
    return {"runs": runs, "agreement": agreement}
