"""The example package (examples/, docs/own_model.md) run as a user would, by import path through the CLI: a real
search of a few tiny trials on the embedded Ray (the workers import ``examples`` through Ray's runtime_env), the
front exported to YAML, and that config predicted and trained again by ``spfde flops`` / ``spfde train --config``
(issue 32 item 7).

Sizes, measured on 2 CPU threads: MobileNetV2 (width 0.5) needs 32x32 images and about 60 steps (3 epochs of
320 images in batches of 16 at lr 0.01) to learn the 2-class synthetic set, and BatchNorm running statistics at
momentum 0.5 (``bn_momentum``) to evaluate above chance after so few steps (at torchvision's 0.1 it fits its
batches but evaluates at 50%); 3 trials at sparsity 0.5 / 0.7 / 0.9 reached 72-91% validation accuracy, 10-35 s
each. The custom network learns its stripes in 2 epochs of batches of 32."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = {
    "mobilenet_v2": ["--set", "model.name=examples.nets:mobilenet_v2",
                     "--set", "model.kwargs={width_mult: 0.5, bn_momentum: 0.5}",
                     "--set", "data.name=synthetic", "--set", "data.synthetic_classes=2", "--set",
                     "data.synthetic_train=320", "--set", "data.synthetic_test=64", "--set", "data.synthetic_size=32",
                     "--set", "train.epochs=3", "--set", "train.batch_size=16", "--set", "train.lr=0.01"],
    "custom": ["--set", "model.name=examples.nets:small_net", "--set", "model.kwargs={width: 8, blocks: 2}",
               "--set", "data.name=examples.data:stripes", "--set", "data.kwargs={n_train: 320, n_test: 64, classes: 2}",
               "--set", "data.augment=false", "--set", "train.epochs=2", "--set", "train.batch_size=32"],
}
KWARGS = {"mobilenet_v2": ({"width_mult": 0.5, "bn_momentum": 0.5}, "synthetic_classes", 2),
          "custom": ({"width": 8, "blocks": 2}, "kwargs", {"n_train": 320, "n_test": 64, "classes": 2})}


def spfde(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}  # `examples` importable, as from a project
    return subprocess.run([sys.executable, "-m", "spfde_search.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env=env)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_example_searches_exports_and_trains_by_import_path(tmp_path: Path, example: str) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = spfde(["search", "--space", "smoke", *EXAMPLES[example], "--set", "train.update_interval=1",
                 "--num-samples", "2", "--max-concurrent", "1", "--num-cpus", "1", "--sampler", "random", "--seed", "0",
                 "--storage-path", str(tmp_path / "results"), "--name", example, "--tracking-uri", uri], tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    df = pd.read_parquet(tmp_path / "results" / example / "trials.parquet")
    done = df[df["status"] == "COMPLETED"]
    assert len(df) == 2 and len(done) >= 1, df[["status", "error"]]
    assert (done["train_flops"] == done["predicted_train_flops"]).all()
    name = EXAMPLES[example][1].split("=", 1)[1]
    assert {json.loads(c)["model"]["name"] for c in df["config"]} == {name}

    # the front (trials above chance) exported, and the export run again by import path
    res = spfde(["export", example, "--tracking-uri", uri, "--out", str(tmp_path / "exported")], tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    exported = sorted((tmp_path / "exported").glob("*.yaml"))
    assert exported and name in exported[0].read_text(), res.stdout[-3000:]
    from spfde_search.config import load_config

    cfg = load_config(exported[0])  # the kwargs travel through MLflow into the export
    model_kwargs, data_field, data_value = KWARGS[example]
    assert cfg.model.kwargs == model_kwargs and getattr(cfg.data, data_field) == data_value
    for cmd in ("flops", "train"):
        res = spfde([cmd, "--config", str(exported[0])], tmp_path)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        assert name in res.stdout or cmd == "train"
