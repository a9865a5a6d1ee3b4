"""torch.distributed: two CPU processes under torchrun (gloo) agree, and match one process with the same
global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from losslab.engine import train
from losslab.engine.synthetic import make_blobs_dataset

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, os, sys
import torch
torch.set_num_threads(1)
from losslab.engine import train
cfg = json.load(open(sys.argv[1]))
result = train(cfg)
torch.save(result.model.state_dict(), os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.pt"))
"""


@pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed gloo missing"
)
def test_two_gloo_ranks_agree_and_match_a_single_process(tmp_path):
    manifest = make_blobs_dataset(tmp_path / "data", n_cases=6, shape=(12, 12, 12), seed=5, n_val=2)
    cfg = {
        "data": {"manifest": str(manifest)},
        "network": {"features": [4, 8], "norm": "instance"},  # no batch statistics: ranks = one big batch
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "epochs": 2,
        "batch_size": 1,  # per rank: a global batch of 2
        "output_dir": str(tmp_path / "ddp"),
        "device": "cpu",
        "augmentation": {"flip": {"prob": 0.5, "axes": [0, 2]}, "noise": {"prob": 0.5}},
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    (tmp_path / "script.py").write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "LossLab"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run(
        [*cmd, str(tmp_path / "script.py"), str(tmp_path / "cfg.json"), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key  # DDP keeps the replicas identical
    lines = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # only rank 0 writes

    single = train({**cfg, "batch_size": 2, "output_dir": str(tmp_path / "single")}).model.state_dict()
    for key in rank0:
        torch.testing.assert_close(rank0[key], single[key], rtol=1e-4, atol=1e-5)
