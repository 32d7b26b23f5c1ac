"""Reading IDX files (the MNIST / Fashion-MNIST format), gzipped or not, with one `DataError` naming the
file for a truncated, corrupt or malformed one."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from .checks import DataError


def _idx_file(root: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    return None


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped for ``.gz``; DataError naming the file if it is unreadable, truncated or
    corrupt (gzip raises EOFError on truncation, which the CLI would otherwise show as a bare "Aborted.")."""
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if path.suffix == ".gz" else data
    except EOFError:
        raise DataError(f"{path} is truncated or corrupt (its gzip stream ends early); download it again") from None
    except (OSError, zlib.error) as e:  # BadGzipFile (bad header, CRC or length) is an OSError
        raise DataError(f"{path} is corrupt or unreadable ({e}); download it again") from None


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an IDX file (the MNIST format: big-endian magic, dims, then uint8 data), gzipped or not."""
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    if data[3] != ndim or len(data) < 4 + 4 * ndim:
        raise DataError(f"{path} has {data[3]} dimensions in its header, expected {ndim}")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != math.prod(dims):
        raise DataError(f"{path} is truncated or padded: its header says {math.prod(dims)} values, found {arr.size}")
    return arr.reshape(dims)
