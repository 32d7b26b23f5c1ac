"""A disk that fills up under a real search (issue 23 item 7): the trials' state folder is a real, tiny tmpfs, so
the trainable's write fails with ENOSPC from the kernel, not from a stub. Needs root to mount; skipped otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from spfde_search.config import load_config

TINY = {"data.name": "synthetic", "data.synthetic_train": 64, "data.synthetic_test": 32, "data.synthetic_size": 8,
        "model.name": "resnet8", "train.epochs": 2, "train.batch_size": 32, "train.update_interval": 1,
        "train.device": "cpu", "train.threads": 1}


@pytest.fixture
def tiny_tmpfs():
    """``mount(path)`` mounts a 64 KiB tmpfs at ``path`` (a trainer state is ~1 MB); unmounted at the end."""
    mounted: list[str] = []

    def mount(path):
        path.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(path)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
        mounted.append(str(path))

    def umount(path):
        subprocess.run(["umount", str(path)], check=True)
        mounted.remove(str(path))

    mount.umount = umount  # type: ignore[attr-defined]
    yield mount
    for p in mounted:
        subprocess.run(["umount", "-l", p], check=False)


@pytest.mark.ray
@pytest.mark.slow
def test_disk_full_stops_the_search_resumably_with_one_message(tmp_path, tiny_tmpfs):
    from spfde_search.search import SearchSettings, drive_search

    space = tmp_path / "lr.yaml"
    space.write_text("train.lr: {type: categorical, choices: [0.05, 0.1, 0.2]}\n")
    settings = SearchSettings(name="full", space=str(space), base_config=load_config(None, TINY).to_dict(),
                              num_samples=3, sampler="random", max_concurrent=1, num_cpus=2,
                              storage_path=str(tmp_path / "runs"))
    state = tmp_path / "runs" / "full" / "state"
    tiny_tmpfs(state)
    cli = [sys.executable, "-m", "spfde_search.cli", "search", "--space", str(space), "-n", "3", "--sampler", "random",
           "--max-concurrent", "1", "--num-cpus", "2", "--storage-path", str(tmp_path / "runs"), "--name", "full",
           "--tracking-uri", "none", *[x for k, v in TINY.items() for x in ("--set", f"{k}={v}")]]
    r = subprocess.run(cli, capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr[-3000:]
    msg = r.stderr.strip()
    assert msg.startswith("error: no space left on device writing trial state to ")
    assert str(state) in msg and "MB per trial" in msg
    assert "spfde search --resume full" in msg
    meta = json.loads((tmp_path / "runs" / "full" / "search.json").read_text())
    assert meta["status"] == "interrupted"
    table = pd.read_parquet(tmp_path / "runs" / "full" / "trials.parquet")
    assert len(table) == 1 and table["status"].tolist() in (["INTERRUPTED"], ["PENDING"])  # no 2nd trial launched

    tiny_tmpfs.umount(state)  # space freed
    out = drive_search(settings, resume=True, console=None, verbose=0)
    assert len(out.table) == 3 and out.table["trial_id"].is_unique
    assert set(out.table["status"]) == {"COMPLETED"}
    assert table["trial_id"][0] in set(out.table["trial_id"])  # the interrupted trial was resumed, not replaced
    assert json.loads((tmp_path / "runs" / "full" / "search.json").read_text())["status"] == "finished"
