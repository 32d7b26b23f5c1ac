"""Where and how a run computes: the device, the autocast dtype and the memory format behind ``train.device``,
``train.precision`` and ``train.channels_last`` (each may be ``auto``).

``auto`` picks the fastest setting that keeps accuracy on the device at hand:

- CUDA: bf16 autocast + channels-last (tensor cores; see ``docs/anchors.md``);
- a CPU with native bf16 (``avx512_bf16`` or AMX-bf16, as ``torch.cpu.get_capabilities()`` reports it): bf16
  autocast + channels-last (oneDNN's bf16 convolutions; ~2x faster than fp32 here, benchmarks/precision.py);
- any other CPU: fp32, contiguous (bf16 there is emulated and slower).

Only the arithmetic changes: the FLOPs accounting (``method/flops.py``) never looks at these settings. The
resolution is split into pure functions of explicit facts (testable without the hardware) and one probe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .config import ConfigError

__all__ = ["Execution", "cpu_has_native_bf16", "execution_settings", "machine_execution", "resolve_channels_last", "resolve_device", "resolve_execution",
           "resolve_precision"]

# x86 features with bf16 arithmetic in hardware; oneDNN uses them for bf16 convolutions and matmuls
_NATIVE_BF16_FEATURES = ("avx512_bf16", "amx_bf16")


def cpu_capabilities() -> Mapping[str, Any]:
    """What torch detected about this CPU (``{}`` on a torch without ``torch.cpu.get_capabilities``)."""
    get = getattr(torch.cpu, "get_capabilities", None)
    return get() if get is not None else {}


def cpu_has_native_bf16(caps: Mapping[str, Any] | None = None) -> bool:
    """True when the CPU computes bf16 in hardware (``avx512_bf16`` or AMX-bf16)."""
    caps = cpu_capabilities() if caps is None else caps
    return any(bool(caps.get(f, False)) for f in _NATIVE_BF16_FEATURES)


def resolve_device(name: str, cuda_available: bool | None = None) -> torch.device:
    """``auto`` = CUDA when visible, else CPU; ``cuda`` without a visible device is a config error."""
    cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    if name == "cuda" and not cuda:
        raise ConfigError("train.device=cuda but no CUDA device is visible; use train.device=auto or cpu")
    if name == "auto":
        return torch.device("cuda" if cuda else "cpu")
    return torch.device(name)


def resolve_precision(precision: str, device_type: str, native_bf16: bool) -> torch.dtype | None:
    """The autocast dtype (None = plain fp32). An explicit ``bf16`` is honoured on any device."""
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp32":
        return None
    if precision != "auto":
        raise ConfigError(f"train.precision must be auto, fp32 or bf16; got {precision!r}")
    if device_type == "cuda" or (device_type == "cpu" and native_bf16):
        return torch.bfloat16
    return None


def resolve_channels_last(setting: str, device_type: str, autocast_dtype: torch.dtype | None,
                          native_bf16: bool) -> bool:
    """``auto`` = on with CUDA, and on a CPU running native bf16 (oneDNN's blocked bf16 kernels want NHWC)."""
    if setting in ("on", "off"):
        return setting == "on"
    if setting != "auto":
        raise ConfigError(f"train.channels_last must be auto, on or off; got {setting!r}")
    if device_type == "cuda":
        return True
    return device_type == "cpu" and native_bf16 and autocast_dtype == torch.bfloat16


@dataclass(frozen=True)
class Execution:
    """The resolved settings of one run."""

    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool

    @property
    def precision(self) -> str:
        return "bf16" if self.autocast_dtype == torch.bfloat16 else "fp32"

    def describe(self) -> str:
        return f"{self.device.type}, {self.precision}{' + channels-last' if self.channels_last else ''}"


def resolve_execution(device: str = "auto", precision: str = "auto", channels_last: str = "auto", *,
                      cuda_available: bool | None = None, caps: Mapping[str, Any] | None = None) -> Execution:
    """Resolve ``train.device`` / ``train.precision`` / ``train.channels_last`` for this machine (or the facts given)."""
    dev = resolve_device(device, cuda_available)
    native = dev.type == "cpu" and cpu_has_native_bf16(caps)
    dtype = resolve_precision(precision, dev.type, native)
    return Execution(dev, dtype, resolve_channels_last(channels_last, dev.type, dtype, native))


def execution_settings(ex: Execution, threads: int) -> dict[str, Any]:
    """``{config path: resolved value}`` of a run (``spfde_search/execution.py`` records and compares these)."""
    return {"train.device": ex.device.type, "train.precision": ex.precision,
            "train.channels_last": "on" if ex.channels_last else "off", "train.threads": int(threads)}


def machine_execution() -> dict[str, Any]:
    """What ``auto`` / ``None`` resolve to in this process before any run sets the threads (torch's default)."""
    return execution_settings(resolve_execution(), torch.get_num_threads())
