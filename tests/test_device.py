"""spfde_search/device.py: ``auto`` resolves per device (CUDA / native-bf16 CPU / other CPU); explicit settings
win; the Trainer uses the resolution; the FLOPs accounting does not depend on precision."""

from __future__ import annotations

import pytest
import torch

from spfde_search.config import ConfigError
from spfde_search.device import (
    cpu_has_native_bf16,
    resolve_channels_last,
    resolve_device,
    resolve_execution,
    resolve_precision,
)
from spfde_search.trainer import Trainer

BF16_CPU = {"avx512_bf16": True, "amx_bf16": False, "avx2": True}
AMX_CPU = {"avx512_bf16": False, "amx_bf16": True}
PLAIN_CPU = {"avx512_bf16": False, "amx_bf16": False, "avx2": True}


@pytest.mark.parametrize(("caps", "native"), [(BF16_CPU, True), (AMX_CPU, True), (PLAIN_CPU, False), ({}, False)])
def test_native_bf16_from_the_reported_capabilities(caps, native):
    assert cpu_has_native_bf16(caps) is native


def test_native_bf16_probe_agrees_with_torch():
    assert cpu_has_native_bf16() == bool(torch.cpu._is_avx512_bf16_supported()
                                         or torch.cpu.get_capabilities().get("amx_bf16", False))


@pytest.mark.parametrize(
    ("cuda", "caps", "dtype", "channels_last"),
    [
        (True, PLAIN_CPU, torch.bfloat16, True),  # CUDA: bf16 + channels-last whatever the host CPU
        (False, BF16_CPU, torch.bfloat16, True),  # CPU with avx512_bf16
        (False, AMX_CPU, torch.bfloat16, True),  # CPU with AMX-bf16
        (False, PLAIN_CPU, None, False),  # other CPUs: fp32, contiguous
    ],
)
def test_auto_per_device(cuda, caps, dtype, channels_last):
    ex = resolve_execution("auto", "auto", "auto", cuda_available=cuda, caps=caps)
    assert ex.device.type == ("cuda" if cuda else "cpu")
    assert ex.autocast_dtype == dtype and ex.channels_last is channels_last
    assert ex.precision == ("bf16" if dtype is not None else "fp32")


def test_explicit_settings_win():
    # fp32 asked on a bf16 CPU: plain fp32, and channels-last 'auto' follows the precision (off)
    ex = resolve_execution("cpu", "fp32", "auto", cuda_available=False, caps=BF16_CPU)
    assert ex.autocast_dtype is None and ex.channels_last is False and ex.describe() == "cpu, fp32"
    # bf16 asked on a CPU without native bf16 is honoured (emulated); channels-last stays off unless asked
    ex = resolve_execution("cpu", "bf16", "auto", cuda_available=False, caps=PLAIN_CPU)
    assert ex.autocast_dtype == torch.bfloat16 and ex.channels_last is False
    ex = resolve_execution("cpu", "fp32", "on", cuda_available=False, caps=PLAIN_CPU)
    assert ex.channels_last is True and ex.describe() == "cpu, fp32 + channels-last"
    ex = resolve_execution("auto", "auto", "off", cuda_available=True, caps=PLAIN_CPU)
    assert ex.device.type == "cuda" and ex.autocast_dtype == torch.bfloat16 and ex.channels_last is False


def test_cpu_device_on_a_cuda_machine_uses_the_cpu_rule():
    ex = resolve_execution("cpu", "auto", "auto", cuda_available=True, caps=PLAIN_CPU)
    assert ex.device.type == "cpu" and ex.autocast_dtype is None and ex.channels_last is False


def test_bad_values_are_config_errors():
    with pytest.raises(ConfigError, match="no CUDA device is visible"):
        resolve_device("cuda", cuda_available=False)
    with pytest.raises(ConfigError, match="train.precision"):
        resolve_precision("fp16", "cpu", True)
    with pytest.raises(ConfigError, match="train.channels_last"):
        resolve_channels_last("yes", "cpu", None, True)


@pytest.mark.parametrize("algorithm", ["dense", "mest"])
def test_trainer_follows_the_resolution_and_flops_do_not_depend_on_precision(trainer_cfg, algorithm):
    over = {"sparsity.algorithm": algorithm, "sparsity.ratio": 0.0 if algorithm == "dense" else 0.8,
            "sieving.fraction": 0.2, "train.epochs": 3}
    runs = {}
    for precision in ("fp32", "auto"):
        cfg = trainer_cfg({**over, "train.precision": precision})
        tr = Trainer(cfg)
        ex = resolve_execution(cfg.train.device, precision, cfg.train.channels_last)
        assert (tr.autocast_dtype, tr.channels_last) == (ex.autocast_dtype, ex.channels_last)
        ms = list(tr.epochs())
        assert all(torch.isfinite(torch.tensor(m.loss)) for m in ms)
        runs[precision] = ([m.train_flops for m in ms], tr.summary()["train_flops"], tr.prediction.train_flops)
    assert runs["fp32"] == runs["auto"]  # measured and predicted FLOPs are the same whatever the arithmetic
