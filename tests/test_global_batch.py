"""COCS and BatchNorm over the global batch under DDP: 2 gloo processes equal 1 process on the same batch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from ccdn.global_batch import GlobalBatchNorm, global_batch_mean, sync_batchnorm
from ccdn.losses import compute_loss
from ccdn.models import create_model

TESTS_DIR = Path(__file__).resolve().parent
OPTIONS = {"stacks": 1, "channels": 16, "input_size": 32, "num_excitations": 3}
GLOBAL_BATCH = 4
LANDMARKS = 5
# Stated tolerance: the two processes sum the same float32 terms in another order.
ATOL, RTOL = 2e-5, 1e-4

SETUP = textwrap.dedent(f"""
    import torch
    from ccdn.models import create_model

    def fixed_model_and_batch():
        torch.manual_seed(0)
        model = create_model("ccdn", {LANDMARKS}, **{OPTIONS!r})
        generator = torch.Generator().manual_seed(1)
        images = torch.rand({GLOBAL_BATCH}, 3, 32, 32, generator=generator)
        target = torch.rand({GLOBAL_BATCH}, {LANDMARKS}, 2, generator=generator)
        return model, images, target
""")

WORKER = SETUP + textwrap.dedent("""
    import sys
    import torch.distributed as dist
    from torch import nn
    from ccdn.global_batch import sync_batchnorm
    from ccdn.losses import compute_loss

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    model, images, target = fixed_model_and_batch()
    model = nn.parallel.DistributedDataParallel(sync_batchnorm(model, torch.device("cpu")))
    share = images.shape[0] // world
    mine = slice(rank * share, (rank + 1) * share)
    losses = compute_loss(model(images[mine]), target[mine])
    losses["total"].backward()
    torch.save({"losses": {k: v.detach() for k, v in losses.items()},
                "grads": {n: p.grad for n, p in model.module.named_parameters()},
                "running_var": model.module.cff.bn.running_var.clone()}, f"{sys.argv[1]}/rank{rank}.pt")
    dist.destroy_process_group()
""")


def single_process(images_slice: slice = slice(None)):
    namespace: dict = {}
    exec(SETUP, namespace)  # noqa: S102 - the very same model/batch code the workers run
    model, images, target = namespace["fixed_model_and_batch"]()
    losses = compute_loss(model(images[images_slice]), target[images_slice])
    losses["total"].backward()
    return losses, {n: p.grad for n, p in model.named_parameters()}, model


def test_two_gloo_processes_give_the_single_process_loss_and_gradients(tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(TESTS_DIR.parent), os.environ.get("PYTHONPATH", "")])}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(worker), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        losses, grads, model = single_process()
        half_losses, _, _ = single_process(slice(0, GLOBAL_BATCH // 2))
    finally:
        torch.set_num_threads(threads)

    for term in ("cocs_T", "cocs_T-1", "cocs_G"):  # Eq. 5's Q over the global batch, on every process
        for rank in ranks:
            torch.testing.assert_close(rank["losses"][term], losses[term].detach(), atol=ATOL, rtol=RTOL)
    # the control: on half the batch the terms differ, so the test would see a per-process Q
    assert max(abs(half_losses[t].item() - losses[t].item()) for t in ("cocs_T", "cocs_T-1", "cocs_G")) > 1e-2
    for term in ("coord", "total"):  # per-image means: the processes' average is the global one
        mean = (ranks[0]["losses"][term] + ranks[1]["losses"][term]) / 2
        torch.testing.assert_close(mean, losses[term].detach(), atol=ATOL, rtol=RTOL)
    for name, grad in grads.items():  # DDP-averaged gradients equal the single-process ones
        for rank in ranks:
            torch.testing.assert_close(rank["grads"][name], grad, atol=ATOL, rtol=RTOL, msg=name)
    torch.testing.assert_close(ranks[0]["running_var"], model.cff.bn.running_var, atol=ATOL, rtol=RTOL)


def test_single_process_global_batch_is_the_local_batch():
    x = torch.randn(3, 5, 4)
    torch.testing.assert_close(global_batch_mean(x, dim=1), x.mean(dim=1))
    torch.manual_seed(0)
    reference = nn.BatchNorm2d(4, momentum=None)
    converted = sync_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 1), reference), torch.device("cpu"))
    assert isinstance(converted[1], GlobalBatchNorm) and converted[1].momentum is None
    images = torch.randn(6, 3, 5, 5)
    twin = nn.BatchNorm2d(4, momentum=None)
    torch.testing.assert_close(converted(images), twin(converted[0](images)))
    torch.testing.assert_close(converted[1].running_var, twin.running_var)


def test_sync_batchnorm_keeps_the_state_and_skips_models_without_batchnorm():
    model = create_model("ccdn", LANDMARKS, **OPTIONS)
    model.cff.bn.running_mean.fill_(0.25)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    converted = sync_batchnorm(model, torch.device("cpu"))
    assert not [m for m in converted.modules() if type(m) is nn.BatchNorm2d]
    assert converted.state_dict().keys() == state.keys()
    assert all(torch.equal(converted.state_dict()[k], v) for k, v in state.items())
    plain = nn.Sequential(nn.Conv2d(3, 4, 1))
    assert sync_batchnorm(plain, torch.device("cpu")) is plain


def test_sync_batchnorm_must_be_a_boolean():
    from ccdn.config import ConfigError, load_config

    assert load_config()["train"]["sync_batchnorm"] is True
    with pytest.raises(ConfigError, match="train.sync_batchnorm"):
        load_config(overrides=["train.sync_batchnorm=maybe"])
