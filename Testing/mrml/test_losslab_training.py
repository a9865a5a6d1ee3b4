"""LossLabLib.training: a real background training run through TrainingJob, streamed events, curves in MRML
tables and plot charts, stop() of a running job, and clear errors for bad inputs."""

from __future__ import annotations

import math
import sys

import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
torch = pytest.importorskip("torch")

from losslab_models import blobs  # noqa: E402

from losslab.engine import load_checkpoint, load_predictor  # noqa: E402
from LossLabLib import mrml_io  # noqa: E402
from LossLabLib.training import (  # noqa: E402
    TrainingJob,
    build_training_config,
    curves_chart,
    curves_rows,
    curves_table,
    find_manifest,
    new_run_folder,
    parse_loss_options,
    progress_fraction,
    wait_for,
)

TINY = dict(
    preset="ice_segmentation",
    device="cpu",
    network={"features": [4, 8]},
    overrides={"batch_size": 1, "optimizer": {"lr": 0.01}},
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("blobs")
    blobs(folder)
    return folder


def test_background_run_streams_events_and_curves(scene, dataset, tmp_path):
    job = TrainingJob.create(
        dataset,
        tmp_path / "run",
        loss="dice",
        loss_options='{"include_background": false}',
        epochs=2,
        python_executable=sys.executable,
        **TINY,
    )
    assert not job.started and job.returncode is None
    job.start()
    assert job.is_running or job.returncode is not None
    assert wait_for(job, lambda j: j.finished, timeout=120)
    assert job.returncode == 0, job.log
    kinds = [e["event"] for e in job.events if e["event"] != "log"]
    assert kinds[0] == "start" and kinds[-3:] == ["end", "done", "exit"]
    assert kinds.count("batch") == 2 * 3 and kinds.count("epoch") == 2
    assert [h["epoch"] for h in job.history] == [1, 2]
    assert job.progress == 1.0 and not job.stopped and job.error is None
    assert job.model_path == tmp_path / "run" / "model.pt" and job.model_path.is_file()
    assert load_predictor(job.model_path).info.labels == ["background", "class1", "class2"]
    assert job.config_path.is_file() and "epoch 2/2" in "\n".join(job.log)
    assert job.status().startswith("done")

    table = curves_table(scene, job.history)
    columns = [table.GetTable().GetColumn(c).GetName() for c in range(table.GetNumberOfColumns())]
    assert columns == [
        "Epoch",
        "Train loss",
        "Val loss",
        "Val Dice class1",
        "Val Dice class2",
        "Val Dice mean",
        "Learning rate",
    ]
    rows = mrml_io.table_rows(table)
    assert [r[0] for r in rows] == [1.0, 2.0]
    assert rows[1][1] == pytest.approx(job.history[1]["train_loss"])
    assert rows[1][3] == pytest.approx(job.history[1]["val_dice"]["class1"], nan_ok=True)

    chart = curves_chart(scene, table)
    series = [chart.GetNthPlotSeriesNode(i) for i in range(chart.GetNumberOfPlotSeriesNodes())]
    assert [s.GetYColumnName() for s in series] == columns[1:-1]
    assert all(s.GetXColumnName() == "Epoch" and s.GetTableNode() is table for s in series)
    assert job.fill_curves(scene, table, chart) == (table, chart)
    # updating with more epochs reuses the table and the series
    curves_table(scene, job.history + [dict(job.history[-1], epoch=3)], node=table)
    assert curves_chart(scene, table, chart=chart) is chart
    assert chart.GetNumberOfPlotSeriesNodes() == len(series) and table.GetNumberOfRows() == 3


def test_stop_ends_a_running_job_and_keeps_the_last_checkpoint(dataset, tmp_path):
    job = TrainingJob.create(dataset, tmp_path / "run", epochs=200, **TINY).start()
    assert wait_for(job, lambda j: len(j.history) >= 1, timeout=120), job.log
    assert job.is_running
    code = job.stop(timeout=60)
    assert code == 0 and not job.is_running, job.log
    assert job.stopped and job.status().startswith("stopped")
    assert job.result is not None and job.result["stopped"] is True
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    state = load_checkpoint(last)  # whole: it loads, with a completed epoch
    assert 1 <= state["epoch"] < 200 and state["epoch"] >= len(job.history) - 1
    assert not (tmp_path / "run" / "model.pt").exists()
    assert not list((tmp_path / "run" / "checkpoints").glob(".*.tmp"))
    assert "--resume" in TrainingJob(job.config, resume=True).command  # continues from last.pt


def test_kill_and_a_failing_worker(dataset, tmp_path):
    job = TrainingJob.create(dataset, tmp_path / "run", epochs=200, **TINY).start()
    job.kill()
    assert job.wait(30) is not None and not job.is_running
    # a config error inside the worker arrives as an error event and exit code 2
    config = build_training_config(dataset, tmp_path / "bad", epochs=1, **TINY)
    config["data"]["manifest"] = str(tmp_path / "gone" / "dataset.json")
    bad = TrainingJob(config).start()
    assert bad.wait(60) == 2
    assert bad.error is not None and "gone" in bad.error["message"]
    assert bad.status().startswith("failed")
    with pytest.raises(RuntimeError, match="already started"):
        bad.start()
    with pytest.raises(FileNotFoundError):
        TrainingJob(config, python_executable=tmp_path / "no-python").start()


def test_clear_errors_for_bad_inputs(dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        build_training_config(tmp_path / "missing", tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="no dataset folder chosen"):
        build_training_config("", tmp_path / "run")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no dataset.json"):
        build_training_config(tmp_path / "empty", tmp_path / "run")
    assert find_manifest(dataset / "dataset.json") == find_manifest(dataset)
    with pytest.raises(ValueError, match="unknown loss 'dise'.*available losses"):
        build_training_config(dataset, tmp_path / "run", loss="dise")
    with pytest.raises(ValueError, match="unknown option.*alpah.*for loss 'dice'"):
        build_training_config(dataset, tmp_path / "run", loss="dice", loss_options={"alpah": 2})
    with pytest.raises(ValueError, match="JSON object"):
        build_training_config(dataset, tmp_path / "run", loss="dice", loss_options="alpha=2")
    with pytest.raises(ValueError, match="unknown network preset 'unet9'"):
        build_training_config(dataset, tmp_path / "run", preset="unet9")
    with pytest.raises(ValueError, match="epochs"):
        build_training_config(dataset, tmp_path / "run", epochs=0)
    assert parse_loss_options("") == {} and parse_loss_options({"a": 1}) == {"a": 1}
    # out_channels follows the dataset (3 labels) although the preset says 2
    config = build_training_config(dataset, tmp_path / "run", loss="dice", loss_options={"alpha": 2})
    assert config["network"]["out_channels"] == 3 and config["loss"]["options"] == {"alpha": 2}


def test_progress_and_curves_rows_without_validation():
    assert progress_fraction({"event": "batch", "epoch": 2, "step": 1, "steps": 4}, 4) == pytest.approx(
        (1 + 0.25) / 4
    )
    assert progress_fraction(
        {"event": "epoch", "epoch": 1, "epochs": 2, "member": 1, "members": 2}
    ) == pytest.approx(0.75)
    assert progress_fraction({"event": "start"}, 3) is None
    columns, rows = curves_rows([{"epoch": 1, "train_loss": 0.5, "lr": 0.1}])
    assert columns == ["Epoch", "Train loss", "Val loss", "Val Dice mean", "Learning rate"]
    assert rows == [(1, 0.5, None, None, 0.1)]
    _, rows = curves_rows([{"epoch": 1, "train_loss": 0.5, "val_dice": {"a": float("nan")}, "lr": 0.1}])
    assert rows[0][3] is None and not any(isinstance(v, float) and math.isnan(v) for v in rows[0])


def test_ensemble_events_progress_and_model_folder(dataset, tmp_path):
    config = build_training_config(
        dataset, tmp_path / "ens", epochs=2, **{**TINY, "overrides": {"ensemble": {"members": 2}}}
    )
    job = TrainingJob(config)  # not started: feed it the worker's events of an ensemble run
    epoch = {"event": "epoch", "epochs": 2, "train_loss": 0.5, "lr": 0.01, "members": 2}
    job._record({**epoch, "epoch": 2, "member": 0})
    assert job.progress == pytest.approx(0.5)
    job._record(
        {
            "event": "end",
            "model_path": str(tmp_path / "ens" / "member0" / "model.pt"),
            "member": 0,
            "members": 2,
        }
    )
    assert job.model_path is None  # member 1 still to come
    job._record({**epoch, "epoch": 1, "member": 1})
    assert job.progress == pytest.approx(0.75)
    job._record(
        {
            "event": "end",
            "model_path": str(tmp_path / "ens" / "member1" / "model.pt"),
            "member": 1,
            "members": 2,
        }
    )
    assert job.model_path == tmp_path / "ens"  # the ensemble folder, which InferenceLogic takes
    columns, rows = curves_rows(job.history)
    assert columns[:2] == ["Member", "Epoch"] and [r[:2] for r in rows] == [(1, 2), (2, 1)]
    assert "[member 2/2] epoch 1/2" in job.log[-2]


def test_new_run_folder_never_reuses_a_name(tmp_path):
    first = new_run_folder(tmp_path, now=0.0)
    assert first.parent == tmp_path and first.name.startswith("run-") and not first.exists()
    assert new_run_folder(tmp_path, now=0.0) == first  # nothing is created
    first.mkdir()
    second = new_run_folder(tmp_path, now=0.0)  # same second
    assert second == tmp_path / f"{first.name}-2"
    second.mkdir()
    assert new_run_folder(tmp_path, now=0.0) == tmp_path / f"{first.name}-3"


def test_a_folder_holding_a_run_is_refused_unless_overwrite(dataset, tmp_path):
    first = TrainingJob.create(dataset, tmp_path / "run", epochs=1, **TINY).start()
    assert wait_for(first, lambda j: j.finished, timeout=120) and first.returncode == 0, first.log
    metrics_before = (tmp_path / "run" / "metrics.jsonl").read_bytes()

    again = TrainingJob.create(dataset, tmp_path / "run", epochs=2, **TINY).start()
    assert wait_for(again, lambda j: j.finished, timeout=120)
    assert again.returncode == 2 and "already holds a run" in again.status() + "\n".join(again.log)
    assert (tmp_path / "run" / "metrics.jsonl").read_bytes() == metrics_before

    replaced = TrainingJob.create(dataset, tmp_path / "run", epochs=2, overwrite=True, **TINY).start()
    assert wait_for(replaced, lambda j: j.finished, timeout=120) and replaced.returncode == 0, replaced.log
    assert [h["epoch"] for h in replaced.history] == [1, 2]
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2
    with pytest.raises(ValueError, match="not both"):
        TrainingJob.create(dataset, tmp_path / "run", resume=True, overwrite=True, **TINY)
