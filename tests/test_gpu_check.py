"""``ccdn benchmark gpu`` on the CPU at tiny sizes: every section runs and reports what it claims."""

from __future__ import annotations

import json

import pytest

from ccdn.benchmarks.gpu import peak_for_gpu_name
from ccdn.cli import main

TINY = ["--device", "cpu", "--size", "small", "--models", "baseline", "ccdn", "--batch-sizes", "2", "--steps", "2",
        "--warmup", "1", "--isqrt-dim", "16", "--isqrt-spatial", "8", "--isqrt-batch", "2", "--train-faces", "16",
        "--train-epochs", "2", "--train-steps-per-epoch", "4", "--train-batch", "4", "--packed", "2",
        "--packed-batch", "2", "--packed-steps", "2"]


def test_cpu_run_of_every_section_writes_json_and_table(tmp_path, capsys):
    out = tmp_path / "check"
    assert main(["benchmark", "gpu", *TINY, "--peak-tflops", "0.5", "--out", str(out)]) == 0
    report = json.loads((out / "gpu_check.json").read_text())
    sections = report["sections"]
    assert set(sections) == {"steps", "isqrt", "train", "ddp", "packed"}
    assert not [name for name, section in sections.items() if "error" in section]
    assert report["synthetic"] is True and report["machine"]["device"] == "cpu"

    rows = sections["steps"]["rows"]
    assert [(r["model"], r["batch_size"]) for r in rows] == [("baseline", 2), ("ccdn", 2)]
    for row in rows:
        assert row["images_per_s"] > 0 and row["flops_per_image"] > 1e8 and row["precision"] == "float32"
        assert row["mfu"] == pytest.approx(row["flops_per_image"] * row["images_per_s"] / 0.5e12)
    assert rows[1]["flops_per_image"] > rows[0]["flops_per_image"]  # the CTMs and CFF cost something

    isqrt = sections["isqrt"]
    assert isqrt["isqrt_ms"] > 0 and isqrt["eigh_ms"] > 0 and 0 < isqrt["rel_error"] < 0.5

    train = sections["train"]
    assert train["steps"] == 8 and train["loss_went_down"]
    assert train["loss_total_last_epoch"] < train["loss_total_first_epoch"]

    ddp = sections["ddp"]
    assert ddp["backend"] == "gloo" and ddp["world_size"] == 1 and ddp["all_reduce_ok"]

    (packed,) = sections["packed"]["rows"]
    assert packed["concurrent_runs"] == 2 and len(packed["images_per_s_per_run"]) == 2
    assert packed["images_per_s_per_gpu"] == pytest.approx(sum(packed["images_per_s_per_run"]))

    table = (out / "gpu_check.md").read_text()
    for heading in ("Training steps", "Covariance square root", "`ccdn train`", "torchrun", "packed on one device"):
        assert heading in table
    assert "Synthetic inputs" in table and table.strip() in capsys.readouterr().out


def test_a_failing_section_is_recorded_and_the_others_still_run(tmp_path):
    out = tmp_path / "check"
    code = main(["benchmark", "gpu", *TINY, "--models", "no-such-model", "--sections", "steps", "isqrt",
                 "--out", str(out)])
    assert code == 1
    sections = json.loads((out / "gpu_check.json").read_text())["sections"]
    assert "no-such-model" in sections["steps"]["error"] and "isqrt_ms" in sections["isqrt"]
    assert "Failed sections" in (out / "gpu_check.md").read_text()


def test_mfu_peaks_are_looked_up_by_device_name():
    assert peak_for_gpu_name("NVIDIA H200") == 989.0
    assert peak_for_gpu_name("NVIDIA H100 PCIe") == 756.0
    assert peak_for_gpu_name("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_for_gpu_name("Some Future GPU") is None


def test_out_of_memory_at_one_batch_size_keeps_the_other_rows(tmp_path, monkeypatch):
    import torch

    import ccdn.benchmarks.gpu as gpu

    real = gpu.measure_training_steps

    def fake(name, size, batch, *args, **kwargs):
        if batch == 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9 GiB")
        return real(name, size, batch, *args, **kwargs)

    monkeypatch.setattr(gpu, "measure_training_steps", fake)
    out = tmp_path / "check"
    assert main(["benchmark", "gpu", *TINY, "--models", "baseline", "--batch-sizes", "2", "3",
                 "--sections", "steps", "--out", str(out)]) == 0
    rows = json.loads((out / "gpu_check.json").read_text())["sections"]["steps"]["rows"]
    assert rows[0]["images_per_s"] > 0 and rows[1] == {"model": "baseline", "batch_size": 3, "error": "CUDA out of memory"}
    assert "| baseline | 3 | CUDA out of memory |" in (out / "gpu_check.md").read_text()
