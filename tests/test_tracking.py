"""MLflow tracking: what a run records, and that tracking failures never stop training."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import warnings

import pytest

from ccdn import tracking
from ccdn.tracking import Tracker, TrackingWarning

from conftest import tiny_config


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_uri_defaults_to_a_sqlite_store_in_the_project(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert tracking.tracking_uri() == "http://tracking.example:5000"
    assert tracking.metric_key("eval/300w/full/fr@0.1_inter_pupil") == "eval/300w/full/fr_0.1_inter_pupil"


def test_run_records_params_metrics_tags_and_artifacts(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = Tracker(uri=uri, experiment="ccdn/300w", run_name="ccdn-300w-p4-s0")
    params = {f"key{i}": str(i) for i in range(150)}  # more than one log_batch call
    run_id = tracker.start(params=params, tags={"config_hash": "abc"})
    tracker.log_metrics({"train/total": 2.0, "val/nme": float("nan")}, step=1)
    tracker.log_metrics({"train/total": 1.0}, step=2)
    artifact = tmp_path / "history.json"
    artifact.write_text("[]")
    tracker.log_artifact(artifact)
    tracker.save_record(tmp_path)
    tracker.finish()

    client = _client(uri)
    run = client.get_run(run_id)
    assert run.info.run_name == "ccdn-300w-p4-s0" and run.info.status == "FINISHED"
    assert run.data.params == params
    assert run.data.tags["config_hash"] == "abc"
    history = client.get_metric_history(run_id, "train/total")
    assert [(m.step, m.value) for m in history] == [(1, 2.0), (2, 1.0)]
    assert "val/nme" not in run.data.metrics  # non-finite values are not logged
    assert [a.path for a in client.list_artifacts(run_id)] == ["history.json"]
    assert client.get_experiment(run.info.experiment_id).name == "ccdn/300w"
    assert json.loads((tmp_path / "tracking.json").read_text())["run_id"] == run_id

    # A requeued job continues the same run; evaluation finds it by id or by name.
    again = Tracker(uri=uri, experiment="ccdn/300w", run_name="ccdn-300w-p4-s0")
    assert again.start(run_id=run_id) == run_id
    assert again.find_run("ccdn-300w-p4-s0") == run_id
    assert len(client.search_runs([run.info.experiment_id])) == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_warns_and_switches_off(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    tracker = Tracker(uri=f"http://127.0.0.1:{_closed_port()}", experiment="ccdn/300w", run_name="r")
    with pytest.warns(TrackingWarning) as record:
        assert tracker.start(params={"a": "1"}) is None
    messages = [str(w.message) for w in record]
    assert any("prepare experiment failed: MlflowException" in m and "Max retries" in m for m in messages), messages
    assert any("not tracked" in m for m in messages)
    assert not tracker.enabled and not tracker.active
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # later calls are silent no-ops
        tracker.log_metrics({"x": 1.0}, step=1)
        tracker.finish()


def test_locked_database_is_retried_and_other_failures_give_up(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "LOCK_BACKOFF_S", 0.0)
    tracker = Tracker(uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="e", max_failures=2)
    attempts = []

    def locked_twice():
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "ok"

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tracker._call("log", locked_twice) == "ok"
    assert len(attempts) == 3

    def broken():
        raise ConnectionError("server went away")

    with pytest.warns(TrackingWarning, match="server went away"):
        assert tracker._call("log", broken) is None
    assert tracker.enabled
    with pytest.warns(TrackingWarning) as record:
        tracker._call("log", broken)
    messages = [str(w.message) for w in record]
    assert any("log failed: ConnectionError" in m for m in messages) and any("switched off" in m for m in messages)
    assert not tracker.enabled


WRITER = textwrap.dedent("""
    import sys
    from ccdn.tracking import Tracker
    uri, name = sys.argv[1], sys.argv[2]
    tracker = Tracker(uri=uri, experiment="ccdn/300w", run_name=name)
    tracker.start(params={"name": name}, tags={"writer": name})
    for step in range(5):
        tracker.log_metrics({"loss": float(step)}, step=step)
    tracker.finish()
    print(tracker.run_id)
""")


def test_parallel_jobs_on_one_sqlite_store_lose_no_run(tmp_path):
    uri = f"sqlite:///{tmp_path}/shared.db"  # fresh store: the jobs also race to create it
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    names = [f"job{i}" for i in range(3)]
    procs = [subprocess.Popen([sys.executable, str(script), uri, name], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for name in names]
    outputs = [proc.communicate(timeout=240) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), [err[-2000:] for _, err in outputs]
    assert not any("TrackingWarning" in err for _, err in outputs), [err[-2000:] for _, err in outputs]
    client = _client(uri)
    experiment = client.get_experiment_by_name("ccdn/300w")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(run.info.run_name for run in runs) == names
    for run in runs:
        assert run.info.status == "FINISHED"
        assert len(client.get_metric_history(run.info.run_id, "loss")) == 5


def test_training_run_is_tracked_with_config_metrics_and_artifacts(trained_run):
    """The shared tiny training run (conftest) read back from MLflow, evaluation attached."""
    run_dir, uri = trained_run["run_dir"], trained_run["uri"]
    from ccdn.config import config_hash, flatten_config, load_config
    from ccdn.evaluate import evaluate

    record = json.loads((run_dir / "tracking.json").read_text())
    config = load_config(run_dir / "config.yaml")
    metrics = evaluate(run_dir, trained_run["data"], activation_maps=0)

    client = _client(uri)
    run = client.get_run(record["run_id"])
    assert run.info.run_name == record["run_name"] == "ccdn-300w-p2-g0.025_0.01_0.05-s0"
    assert client.get_experiment(run.info.experiment_id).name == "ccdn/300w"
    assert run.info.status == "FINISHED"
    assert set(run.data.params) == set(flatten_config(config))
    assert run.data.params["optim.betas"] == "[0.5, 0.999]"
    assert run.data.params["model.options.num_excitations"] == "2"
    assert run.data.tags["config_hash"] == config_hash(config)
    assert {"git_commit", "host", "slurm_job_id"} <= set(run.data.tags)
    epochs = config["optim"]["epochs"]
    for key in ("train/total", "train/coord", "train/cocs_T", "train/cocs_T-1", "train/cocs_G", "lr",
                "val/nme_inter_pupil", "images_per_s"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert steps == (list(range(epochs + 1)) if key == "val/nme_inter_pupil" else list(range(1, epochs + 1))), key
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"config.yaml", "history.json", "eval"}
    eval_files = {a.path for a in client.list_artifacts(run.info.run_id, "eval/300w")}
    assert {"eval/300w/metrics.json", "eval/300w/predictions.npz"} <= eval_files
    logged = client.get_run(run.info.run_id).data.metrics["eval/300w/full/nme_inter_ocular"]
    assert logged == pytest.approx(metrics["subsets"]["full"]["nme"]["inter_ocular"])


def test_training_completes_while_the_server_is_unreachable(tiny_300w, tmp_path, monkeypatch, single_thread):
    from ccdn.train import train

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    config = tiny_config(tiny_300w, "model.name=test/tiny", "optim.epochs=1", "tracking.enabled=true")
    with pytest.warns(TrackingWarning) as record:
        result = train(config, tmp_path / "run", progress=False)
    assert any("MlflowException" in str(w.message) for w in record), [str(w.message) for w in record]
    assert result.completed
    assert (tmp_path / "run" / "DONE").is_file() and (tmp_path / "run" / "model.pt").is_file()
    assert not (tmp_path / "run" / "tracking.json").exists()


def test_deferred_run_is_logged_afterwards_as_the_live_path_logs_it(tiny_300w, tmp_path, monkeypatch, single_thread):
    """tracking.defer: training and evaluation write no MLflow; `ccdn track` logs the run dir, idempotently."""
    from ccdn.cli import main
    from ccdn.config import config_hash, flatten_config, load_config
    from ccdn.evaluate import evaluate
    from ccdn.train import train

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    config = tiny_config(tiny_300w, "tracking.enabled=true", "tracking.defer=true", "optim.epochs=2")
    run_dir = train(config, tmp_path / "run", progress=False).run_dir
    metrics = evaluate(run_dir, tiny_300w, activation_maps=0)
    assert not (tmp_path / "mlflow.db").exists()  # neither job opened the store
    record = json.loads((run_dir / "tracking.json").read_text())
    assert record["deferred"] is True and {"git_commit", "host", "config_hash", "world_size"} <= set(record["tags"])

    summary = tmp_path / "summary.json"
    assert main(["track", str(run_dir), "--summary", str(summary)]) == 0
    record = json.loads((run_dir / "tracking.json").read_text())
    client = _client(uri)
    run = client.get_run(record["run_id"])
    stored = load_config(run_dir / "config.yaml")
    assert run.info.status == "FINISHED" and client.get_experiment(run.info.experiment_id).name == "ccdn/300w"
    assert set(run.data.params) == set(flatten_config(stored))
    assert run.data.tags["config_hash"] == config_hash(stored) and run.data.tags["tracked"] == "ccdn track (deferred)"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/nme_inter_pupil")] == [0, 1, 2]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/total")] == [1, 2]
    assert run.data.metrics["eval/300w/full/nme_inter_ocular"] == pytest.approx(
        metrics["subsets"]["full"]["nme"]["inter_ocular"])
    assert {"eval/300w/metrics.json", "eval/300w/predictions.npz"} <= {
        a.path for a in client.list_artifacts(run.info.run_id, "eval/300w")}
    assert json.loads(summary.read_text()) == {str(run_dir): f"imported ({record['run_id']})"}

    # again: nothing changed, nothing logged twice
    assert main(["track", str(run_dir)]) == 0
    assert json.loads((run_dir / "tracking.json").read_text())["run_id"] == record["run_id"]
    assert len(client.get_metric_history(record["run_id"], "train/total")) == 2
    # re-evaluated (other results): the earlier MLflow run is replaced, not duplicated
    evaluate(run_dir, tiny_300w, activation_maps=0, flip=True, out=run_dir / "eval" / "300w")
    assert main(["track", str(run_dir)]) == 0
    new_id = json.loads((run_dir / "tracking.json").read_text())["run_id"]
    assert new_id != record["run_id"]
    assert client.get_run(record["run_id"]).info.lifecycle_stage == "deleted"
    assert "eval/300w-flip/full/nme_inter_ocular" in client.get_run(new_id).data.metrics


def test_track_refuses_a_directory_that_is_no_run(tmp_path, capsys):
    from ccdn.cli import main

    assert main(["track", str(tmp_path)]) == 2
    assert f"not a run directory (no config.yaml): {tmp_path}" in capsys.readouterr().err
