"""The data contract for the user's own data (``data.name: mypkg.data:load``, keyword arguments in
``data.kwargs``): the callable returns ``(train, test)``, each a ``torch.utils.data.Dataset`` of
``(image, label)`` pairs or a pair of tensors ``(images, labels)``. The class count, image shape, sizes and
per-channel normalisation are taken from the data, so chance level, the classifier's size and the validation
split follow it. It is read once per process and kept (the FLOPs prediction and the trainer read the same
set); every problem is one ConfigError line naming ``data.name``.

Tensors, and a ``Dataset`` whose training images take at most 1 GiB, are held whole on the device (the
``DataBundle`` of the built-in sets; a ``Dataset`` is read item by item once). A larger ``Dataset``, or any with
``data.stream: true``, is not read whole: its labels are read once (its ``targets`` where it has them), the
normalisation comes from a sample, and it streams through a DataLoader each epoch (``stream``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from spfde_search.choices import is_import_path
from spfde_search.config import ConfigError, DataConfig
from spfde_search.user_code import call_user, load_callable

from .spec import DATASETS, DatasetEntry, _RawData, _UserSets
from .stream import image_of, read_labels, stats_sample

STREAM_ABOVE = 1 << 30  # bytes of training images above which a user Dataset streams (data.stream unset)

__all__ = ["entry_for", "user_entry"]

_CACHE: dict[str, DatasetEntry] = {}


def entry_for(cfg: DataConfig) -> DatasetEntry:
    """The registered entry of ``data.name``, or the user's data behind an import path."""
    return user_entry(cfg) if is_import_path(cfg.name) else DATASETS.get(cfg.name)(cfg)


def _split(which: str, obj: Any) -> tuple[Tensor, Tensor]:
    """A (images, labels) pair of tensors, or a Dataset of (image, label) read into one."""
    if _is_tensor_pair(obj):
        x, y = obj
    elif hasattr(obj, "__getitem__") and hasattr(obj, "__len__"):
        items = [obj[i] for i in range(len(obj))]
        if not items:
            raise ConfigError(f"data.name: the {which} set is empty")
        images = [torch.as_tensor(it[0]) for it in items]
        shapes = {tuple(im.shape) for im in images}
        if len(shapes) > 1:
            first = tuple(images[0].shape)
            odd = next(i for i, im in enumerate(images) if tuple(im.shape) != first)
            raise ConfigError(
                f"data.name: the {which} images have different shapes ({first} at 0, {tuple(images[odd].shape)} at "
                f"{odd}); give them one size in the data callable (e.g. a torchvision Resize + CenterCrop transform)")
        x, y = torch.stack(images), torch.as_tensor([int(it[1]) for it in items])
    else:
        raise ConfigError(f"data.name: the {which} set is a {type(obj).__name__}; return a Dataset of (image, label) "
                          "or a pair of tensors (images, labels)")
    if x.ndim == 3:  # (N, H, W): one channel
        x = x.unsqueeze(1)
    if x.ndim != 4 or y.ndim != 1 or len(x) != len(y) or y.is_floating_point():
        raise ConfigError(f"data.name: the {which} set holds images {tuple(x.shape)} and labels {tuple(y.shape)} "
                          f"({y.dtype}); expected (N, C, H, W) images and N integer labels")
    return x, y.long()


def _checked(name: str, shape: tuple[int, ...], test_shape: tuple[int, ...], dtype: torch.dtype, ty: Tensor,
             vy: Tensor) -> tuple[int, int, int]:
    """(channels, image size, classes) of images of ``shape`` (C, H, W) labelled ``ty`` (test: ``vy``);
    ConfigError for what the trainer cannot use."""
    c, h, w = shape
    if h != w:
        raise ConfigError(f"data.name: {name} has {h}x{w} images; make them square in the data callable (crop or "
                          "resize)")
    if tuple(test_shape) != (c, h, w):
        raise ConfigError(f"data.name: {name}'s test images are {tuple(test_shape)}, its training images "
                          f"{(c, h, w)}; give both sets one image shape")
    if dtype not in (torch.uint8, torch.float32, torch.float16, torch.bfloat16, torch.float64):
        raise ConfigError(f"data.name: {name}'s images are {dtype}; return uint8 pixels or float images")
    low = min(int(ty.min()), int(vy.min()))
    if low < 0:
        raise ConfigError(f"data.name: {name} has a negative label ({low}); number the classes 0, 1, ...")
    classes = int(max(int(ty.max()), int(vy.max()))) + 1
    if len(torch.unique(ty)) < 2:
        raise ConfigError(f"data.name: {name}'s training set has one class ({int(ty[0])}); a classifier needs "
                          "at least two")
    return int(c), int(h), classes


def _stats(x: Tensor, scale: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    xf = x.to(torch.float64) * scale
    mean = xf.mean(dim=(0, 2, 3))
    std = xf.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _streams(cfg: DataConfig, train: Any) -> bool:
    """Whether the training set streams: never for tensors (already in memory), as ``data.stream`` says for a
    Dataset, else when its images would take over ``STREAM_ABOVE`` bytes held whole."""
    if _is_tensor_pair(train) or not (hasattr(train, "__getitem__") and hasattr(train, "__len__")) or not len(train):
        return False
    if cfg.stream is not None:
        return cfg.stream
    first = image_of(train[0])
    return len(train) * first.numel() * first.element_size() > STREAM_ABOVE


def _is_tensor_pair(obj: Any) -> bool:
    return isinstance(obj, (tuple, list)) and len(obj) == 2 and all(isinstance(t, Tensor) for t in obj)


def _streamed(cfg: DataConfig, train: Any, test: Any) -> DatasetEntry:
    """The entry of a streamed set: labels read once, statistics from a sample, no images kept."""
    if _is_tensor_pair(test) or not (hasattr(test, "__getitem__") and hasattr(test, "__len__")) or not len(test):
        raise ConfigError(f"data.name: {cfg.name} streams its training Dataset (data.stream), so its test set must "
                          "be a non-empty Dataset of (image, label) too")
    train_y, shape = read_labels("training", train, cfg.num_workers)
    test_y, test_shape = read_labels("test", test, cfg.num_workers)
    if len(shape) != 3:
        raise ConfigError(f"data.name: {cfg.name}'s training images have shape {shape}; expected (C, H, W) images "
                          "(or (H, W) for one channel)")
    sample = stats_sample(train)
    c, size, classes = _checked(cfg.name, shape, test_shape, sample.dtype, train_y, test_y)
    scale = 1 / 255 if sample.dtype == torch.uint8 else 1.0
    mean, std = _stats(sample, scale)

    def no_load(_cfg: DataConfig) -> _RawData:
        raise RuntimeError(f"{cfg.name} streams (DatasetEntry.streamed); it has no whole-set load")

    return DatasetEntry(cfg.name, c, size, classes, len(train_y), len(test_y), mean, std, scale, no_load,
                        _UserSets(train, test, train_y, test_y))


def user_entry(cfg: DataConfig) -> DatasetEntry:
    """Call the user's data callable once per (name, kwargs, root, stream) in this process and describe what it
    gave."""
    key = json.dumps([cfg.name, cfg.kwargs, cfg.root, cfg.stream], sort_keys=True, default=str)
    if key in _CACHE:
        return _CACHE[key]
    fn = load_callable("data.name", cfg.name)
    out = call_user("data.name", fn, {"root": cfg.root}, cfg.kwargs)
    if not isinstance(out, Sequence) or isinstance(out, (str, bytes)) or len(out) != 2:
        raise ConfigError(f"data.name: {cfg.name} returned a {type(out).__name__}; return (train, test)")
    if _streams(cfg, out[0]):
        entry = _streamed(cfg, out[0], out[1])
        _CACHE[key] = entry
        return entry
    train, test = _split("training", out[0]), _split("test", out[1])
    x = train[0]
    c, size, classes = _checked(cfg.name, tuple(x.shape[1:]), tuple(test[0].shape[1:]), x.dtype, train[1], test[1])
    scale = 1 / 255 if x.dtype == torch.uint8 else 1.0
    mean, std = _stats(x, scale)
    raw = _RawData(x, train[1], test[0] if test[0].dtype == x.dtype else test[0].to(x.dtype), test[1],
                   (f"{cfg.name} training images", f"{cfg.name} training labels", f"{cfg.name} test images",
                    f"{cfg.name} test labels"))
    entry = DatasetEntry(cfg.name, c, size, classes, len(raw.train_y), len(raw.test_y), mean, std, scale,
                         lambda _cfg: raw)
    _CACHE[key] = entry
    return entry
