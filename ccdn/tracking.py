"""MLflow tracking as a side channel that never kills training.

Why these rules: a week-long training job must not die because the tracking server restarted or a
parallel job held the SQLite lock, and every job of a grid must still end up in the store. So:

- URI: ``MLFLOW_TRACKING_URI`` when set, otherwise ``sqlite:///<project>/mlflow.db`` (project = the
  current working directory; MLflow 3 refuses the old file store). Artefacts of that local store go to
  ``<project>/mlruns/``. Browse with ``mlflow ui --backend-store-uri sqlite:///mlflow.db``.
- One experiment per dataset (``ccdn/<dataset>``), created under a file lock before the first run.
- Every call goes through :meth:`Tracker._call`: a local SQLite store is written under an exclusive
  ``flock`` (parallel jobs on one machine queue instead of colliding), "database is locked" is
  retried with exponential backoff, and any other failure warns (``TrackingWarning``) and is
  counted; after ``max_failures`` consecutive failures the tracker switches itself off.
- HTTP calls get short timeouts and few retries (``MLFLOW_HTTP_REQUEST_*`` defaults set here unless
  the user set them), so an unreachable server costs seconds, not minutes.
- The run id is stored in ``<run_dir>/tracking.json``: a requeued job continues the same MLflow run
  (even when its predecessor died before the first checkpoint), and ``ccdn evaluate`` attaches its
  results to the run that trained the model. A run left RUNNING by a dead job whose directory is
  taken over by another recipe is closed as KILLED.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import socket
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TypeVar

from ccdn.io import write_text

T = TypeVar("T")

TRACKING_FILE = "tracking.json"
# The files of one evaluation logged as artefacts under ``eval/<dataset>`` of the training run.
EVAL_ARTIFACTS = ("metrics.json", "predictions.npz", "activation_maps.png", "activation_maps.npz")
DB_NAME = "mlflow.db"

# Used only when the user has not set them: fail fast on an unreachable server.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}

LOCK_RETRIES = 10
LOCK_BACKOFF_S = 0.05


class TrackingWarning(UserWarning):
    """A tracking call failed; training goes on and the run directory stays the source of truth."""


def tracking_uri(project_dir: Path | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` or the project's local SQLite store."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if uri:
        return uri
    return f"sqlite:///{(Path(project_dir) if project_dir else Path.cwd()).resolve() / DB_NAME}"


def experiment_name(dataset: str) -> str:
    return f"ccdn/{dataset}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else ``None``."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix):]) if uri.startswith(prefix) else None


def metric_key(name: str) -> str:
    """MLflow allows letters, digits, ``_ - . / : `` and space in metric names; map the rest (``fr@0.1``)."""
    allowed = set("_-./: ")
    return "".join(c if c.isalnum() or c in allowed else "_" for c in name)


def git_commit(directory: Path | None = None) -> str:
    """``HEAD`` of the repository holding ``directory`` (``+dirty`` if modified), or ``unknown``."""
    directory = directory or Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=directory,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


def environment_tags() -> dict[str, str]:
    """Where and from which code a run came: git commit, host, SLURM job."""
    job = os.environ.get("SLURM_JOB_ID", "")
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    commit = git_commit()
    tags = {"git_commit": commit, "host": socket.gethostname(), "slurm_job_id": job or "none"}
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit.split("+")[0]
    return tags


def params_from_flat(flat: Mapping[str, Any]) -> dict[str, str]:
    """MLflow params are strings; lists/None/bools as JSON so they read back unambiguously."""
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in flat.items()}


def is_lock_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "database is locked" in text or "database table is locked" in text


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Exclusive ``flock`` on ``<db>.lock`` for a local SQLite store (no-op for servers)."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    import fcntl

    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.lock", "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class Tracker:
    """One MLflow run, every call best effort. ``Tracker(enabled=False)`` does nothing at all."""

    def __init__(self, *, uri: str | None = None, experiment: str | None = None, run_name: str | None = None,
                 enabled: bool = True, max_failures: int = 3) -> None:
        self.uri = uri or tracking_uri()
        self.experiment = experiment
        self.run_name = run_name
        self.enabled = enabled
        self.max_failures = max_failures
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self._failures = 0
        self._client: Any = None
        if enabled:
            for key, value in HTTP_DEFAULTS.items():
                os.environ.setdefault(key, value)

    @property
    def active(self) -> bool:
        return self.enabled and self.run_id is not None

    # ----------------------------------------------------------------------------------- lifecycle
    def start(self, *, params: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None,
              run_id: str | None = None, continue_if: Mapping[str, str] | None = None) -> str | None:
        """Create the run (or continue ``run_id``), logging ``params`` and ``tags`` once. Returns the id.

        With ``continue_if``, ``run_id`` is continued only when its tags hold those values; otherwise
        it belongs to another recipe that died in this run directory: it is closed as KILLED (if it was
        left RUNNING) and a new run is created.
        """
        if not self.enabled:
            return None
        if self.experiment is None:
            raise ValueError("Tracker.start needs an experiment name")
        self.experiment_id = self._call("prepare experiment", self._ensure_experiment)
        if self.experiment_id is None:
            self._give_up("cannot reach the tracking store; this run is not tracked")
            return None
        previous = self._call("find run", lambda: self._get_client().get_run(run_id)) if run_id else None
        if previous is not None and continue_if and any(previous.data.tags.get(k) != v for k, v in continue_if.items()):
            if previous.info.status == "RUNNING":
                self._call("close dead run", lambda: self._get_client().set_terminated(run_id, status="KILLED"))
            previous = None
        if previous is not None:
            self.run_id = run_id
            self._call("reopen run", lambda: self._get_client().update_run(run_id, status="RUNNING"))
            if tags:
                self.set_tags(tags)
            return run_id
        run = self._call("create run", lambda: self._get_client().create_run(
            self.experiment_id, run_name=self.run_name, tags=dict(tags or {})))
        if run is None:
            self._give_up("could not create the run; this run is not tracked")
            return None
        self.run_id = run.info.run_id
        if params:
            self.log_params(params)
        return self.run_id

    def attach(self, run_id: str) -> bool:
        """Continue logging into an existing run (evaluation results into the training run)."""
        if not self.enabled:
            return False
        run = self._call("find run", lambda: self._get_client().get_run(run_id))
        if run is None:
            return False
        self.run_id, self.experiment_id = run_id, run.info.experiment_id
        return True

    def find_run(self, run_name: str) -> str | None:
        """The newest run called ``run_name`` in this tracker's experiment, if any."""
        if not self.enabled or self.experiment is None:
            return None

        def search() -> str | None:
            client = self._get_client()
            exp = client.get_experiment_by_name(self.experiment)
            if exp is None:
                return None
            runs = client.search_runs([exp.experiment_id], filter_string=f"attributes.run_name = '{run_name}'",
                                      order_by=["attributes.start_time DESC"], max_results=1)
            return runs[0].info.run_id if runs else None

        return self._call("search run", search)

    def delete_run(self, run_id: str) -> None:
        """Mark an earlier run deleted (``ccdn track`` replacing the import of a run that changed)."""
        if self.enabled:
            self._call("delete replaced run", lambda: self._get_client().delete_run(run_id))

    def finish(self, status: str = "FINISHED") -> None:
        """Mark the run FINISHED / FAILED / KILLED."""
        if self.active:
            self._call("end run", lambda: self._get_client().set_terminated(self.run_id, status=status))

    # ------------------------------------------------------------------------------------- logging
    def log_params(self, params: Mapping[str, str]) -> None:
        if not self.active:
            return
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            chunk = items[start:start + 100]
            self._logged("log params", lambda c=chunk: self._get_client().log_batch(self.run_id, params=c))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if not self.active:
            return
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        self._logged("set tags", lambda: self._get_client().log_batch(self.run_id, tags=items))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Finite values only (MLflow stores NaN, but a NaN curve point only hides the others)."""
        if not self.active:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(metric_key(k), float(v), now, int(step or 0)) for k, v in metrics.items()
                 if v is not None and math.isfinite(float(v))]
        if items:
            self._logged("log metrics", lambda: self._get_client().log_batch(self.run_id, metrics=items))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if Path(path).exists():
            self._logged(f"log artifact {Path(path).name}",
                         lambda: self._get_client().log_artifact(self.run_id, str(path), artifact_path))

    # --------------------------------------------------------------------------- run-dir record
    def save_record(self, run_dir: Path) -> None:
        """``<run_dir>/tracking.json``: where this run lives, so requeues and evaluation find it."""
        if self.active:
            record = {"tracking_uri": self.uri, "experiment": self.experiment,
                      "experiment_id": self.experiment_id, "run_id": self.run_id, "run_name": self.run_name}
            write_text(Path(run_dir) / TRACKING_FILE, json.dumps(record, indent=2) + "\n")

    # ------------------------------------------------------------------------------------ plumbing
    def _get_client(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def _ensure_experiment(self) -> str:
        """Get or create the experiment; a parallel creator winning the race is not an error."""
        client = self._get_client()
        existing = client.get_experiment_by_name(self.experiment)
        if existing is not None:
            return existing.experiment_id
        db = sqlite_path(self.uri)
        location = str(db.parent / "mlruns") if db is not None else None
        try:
            return client.create_experiment(self.experiment, artifact_location=location)
        except Exception:  # noqa: BLE001 - lost the race: someone else created it
            existing = client.get_experiment_by_name(self.experiment)
            if existing is None:
                raise
            return existing.experiment_id

    def _logged(self, what: str, fn: Callable[[], T]) -> T | None:
        return self._call(what, fn) if self.active else None

    def _call(self, what: str, fn: Callable[[], T]) -> T | None:
        """Run ``fn`` under the store lock; retry lock errors with backoff; warn (never raise) on failure."""
        if not self.enabled:
            return None
        for attempt in range(LOCK_RETRIES):
            try:
                with store_lock(self.uri):
                    result = fn()
                self._failures = 0
                return result
            except Exception as exc:  # noqa: BLE001 - tracking must never kill training
                if is_lock_error(exc) and attempt + 1 < LOCK_RETRIES:
                    time.sleep(LOCK_BACKOFF_S * 2 ** attempt * (1 + random.random()))
                    continue
                self._failures += 1
                warnings.warn(f"MLflow tracking ({self.uri}): {what} failed: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}; training continues",
                              TrackingWarning, stacklevel=3)
                if self._failures >= self.max_failures:
                    self._give_up(f"{self._failures} consecutive failures")
                return None
        return None

    def _give_up(self, why: str) -> None:
        if self.enabled:
            warnings.warn(f"MLflow tracking ({self.uri}) switched off for this process: {why}. The run "
                          "directory (history.json, metrics.json) still holds every result.",
                          TrackingWarning, stacklevel=3)
        self.enabled = False


def read_record(run_dir: Path) -> dict[str, Any] | None:
    """The ``tracking.json`` of a run directory, or ``None``."""
    path = Path(run_dir) / TRACKING_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def tracker_for_run_dir(run_dir: Path, *, experiment: str, run_name: str) -> Tracker:
    """A tracker attached to the run that trained ``run_dir`` (found by stored id, else by name).

    The URI stored at training time is used (that is where the run is), else the current default;
    when no run is found the tracker is returned disabled (results then live only in the run directory).
    """
    record = read_record(run_dir) or {}
    uri = record.get("tracking_uri") or tracking_uri()
    tracker = Tracker(uri=uri, experiment=record.get("experiment") or experiment,
                      run_name=record.get("run_name") or run_name)
    run_id = record.get("run_id")
    if run_id and tracker.attach(run_id):
        return tracker
    found = tracker.find_run(tracker.run_name or run_name)
    if found and tracker.attach(found):
        return tracker
    if tracker.enabled:
        warnings.warn(f"no MLflow run named {run_name!r} in {tracker.experiment!r} at {uri}; evaluation results "
                      "are written to the run directory only", TrackingWarning, stacklevel=2)
    tracker.enabled = False
    return tracker


# ----------------------------------------------------------------------------- what a run logs
# One definition for the live path (training, evaluation) and the deferred one (ccdn.track_import).


def epoch_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """The MLflow metrics of one ``history.json`` record (epoch 0: the untrained model's NME only)."""
    metrics = {f"val/nme_{record['val_norm']}": record["val_nme"]}
    if record.get("epoch", 0) > 0:
        metrics.update({f"train/{k[5:]}": v for k, v in record.items() if k.startswith("loss_")})
        metrics.update({"lr": record["lr"], "images_per_s": record["images_per_s"],
                        "epoch_seconds": record["epoch_seconds"]})
    return metrics


def eval_prefix(metrics: Mapping[str, Any], test_set: str | None = None) -> str:
    """``eval/<test set>`` (``-flip`` for a flip test): where one ``metrics.json`` goes in the run.

    ``test_set`` defaults to the metrics' dataset; ``ccdn track`` passes the evaluation's directory name,
    which also tells apart two test sets in one format (COFW-68 and the synthetic occlusion sweep).
    """
    return f"eval/{test_set or metrics['dataset']}" + ("-flip" if metrics["flip_test"] else "")


def eval_metrics(metrics: Mapping[str, Any], threshold: float, prefix: str) -> dict[str, float]:
    """The MLflow metrics of one evaluation ``metrics.json``: every subset x measure x normaliser."""
    flat = {}
    for subset, entry in metrics["subsets"].items():
        for measure in ("nme", f"fr@{threshold:g}", f"auc@{threshold:g}"):
            for norm, value in entry[measure].items():
                flat[f"{prefix}/{subset}/{measure}_{norm}"] = value
    return flat


def is_deferred(run_dir: Path) -> bool:
    """Whether the run was trained with ``tracking.defer``: its MLflow run is made by ``ccdn track``."""
    return bool((read_record(run_dir) or {}).get("deferred"))


def save_deferred_record(run_dir: Path, tags: Mapping[str, str]) -> None:
    """``tracking.json`` of a deferred run: what only the training process knows, for ``ccdn track``."""
    write_text(Path(run_dir) / TRACKING_FILE, json.dumps({"deferred": True, "tags": dict(tags)}, indent=2) + "\n")
