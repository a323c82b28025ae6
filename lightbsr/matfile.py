"""Read one numeric matrix from a MATLAB ``.mat`` file (Level 5 / v6 / v7 format; numpy and zlib only).

The authors' LightBSR runs save their teacher's PCA basis as ``PCA_matrix.mat`` (key ``p``);
that one real matrix is all lightbsr reads from MATLAB files, so this is a small reader of
the Level 5 layout (MATLAB's documented "MAT-File Format"), not a dependency on SciPy:

* a 128-byte header: text, subsystem offset, version ``0x0100`` and the endian mark
  ``IM`` (little-endian) or ``MI`` (big-endian);
* data elements, each an 8-byte tag (type, byte count) — or the 4-byte "small data element"
  form — with its data padded to 8 bytes; ``miCOMPRESSED`` elements (MATLAB's default since
  v7) hold a zlib stream of further elements, inflated up to :data:`MAX_INFLATED_BYTES`;
* an ``miMATRIX`` element holds the array flags (class, complex), the dimensions, the name
  and the real part, stored column-major.

Anything else — MATLAB v7.3 files (HDF5), v4 files, complex, sparse, cell or struct arrays,
a missing key, truncated or corrupt data — is a :class:`~lightbsr.errors.ConfigError` in one
line that says which.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np

from lightbsr.errors import ConfigError

__all__ = ["MAX_INFLATED_BYTES", "read_mat_matrix"]

MAX_INFLATED_BYTES = 64 << 20
"""Largest inflated ``miCOMPRESSED`` element read (a 441×15 float64 basis is 53 KB)."""

_MI_INT8, _MI_INT32, _MI_UINT32, _MI_MATRIX, _MI_COMPRESSED = 1, 5, 6, 14, 15
_NUMERIC_TYPES = {  # miTYPE → numpy type (byte order added when read)
    1: "i1",
    2: "u1",
    3: "i2",
    4: "u2",
    5: "i4",
    6: "u4",
    7: "f4",
    9: "f8",
    12: "i8",
    13: "u8",
}
_NUMERIC_CLASSES = set(range(6, 16))  # mxDOUBLE_CLASS … mxUINT64_CLASS
_CLASS_NAMES = {1: "cell array", 2: "struct", 3: "object", 4: "char array", 5: "sparse matrix"}


def read_mat_matrix(path: str | os.PathLike[str], key: str) -> np.ndarray:
    """The real numeric matrix named ``key`` in a Level 5 MAT-file, as float64 (see the module docstring)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror or err})") from err
    if len(data) < 128:
        raise ConfigError(f"{path}: not a MATLAB .mat file (too short for a Level 5 header)")
    header = data[:116]
    if header.startswith(b"MATLAB 7.3"):
        raise ConfigError(f"{path}: a MATLAB v7.3 (HDF5) file; save it as -v7 (or with scipy.io.savemat)")
    endian = data[126:128]
    if not header.startswith(b"MATLAB") or endian not in (b"IM", b"MI"):
        raise ConfigError(f"{path}: not a MATLAB Level 5 .mat file (v4 files and other formats are not read)")
    order = "<" if endian == b"IM" else ">"
    found = _find(data, 128, order, key, path)
    if found is None:
        raise ConfigError(f"{path}: no matrix named {key!r}")
    return found


def _find(data: bytes, offset: int, order: str, key: str, path: Path) -> np.ndarray | None:
    while offset + 8 <= len(data):
        kind, payload, offset = _element(data, offset, order, path)
        if kind == _MI_COMPRESSED:
            try:
                inflater = zlib.decompressobj()
                inner = inflater.decompress(payload, MAX_INFLATED_BYTES)
            except zlib.error as err:
                raise ConfigError(f"{path}: corrupt compressed data ({err})") from None
            if inflater.unconsumed_tail:
                raise ConfigError(f"{path}: a compressed element inflates beyond {MAX_INFLATED_BYTES} bytes")
            found = _find(inner, 0, order, key, path)
            if found is not None:
                return found
        elif kind == _MI_MATRIX:
            matrix = _matrix(payload, order, key, path)
            if matrix is not None:
                return matrix
    return None


def _element(data: bytes, offset: int, order: str, path: Path) -> tuple[int, bytes, int]:
    """(type, data, offset of the next element) of the data element at ``offset``."""
    if offset + 8 > len(data):
        raise ConfigError(f"{path}: truncated .mat file")
    first, second = np.frombuffer(data, dtype=f"{order}u4", count=2, offset=offset)
    if first >> 16:  # small data element: type and size in one word, data in the next 4 bytes
        kind, size = int(first & 0xFFFF), int(first >> 16)
        if size > 4:
            raise ConfigError(f"{path}: corrupt .mat file (small element of {size} bytes)")
        return kind, data[offset + 4 : offset + 4 + size], offset + 8
    kind, size = int(first), int(second)
    start, end = offset + 8, offset + 8 + size
    if end > len(data):
        raise ConfigError(f"{path}: truncated .mat file")
    padded = end if kind == _MI_COMPRESSED else start + -(-size // 8) * 8
    return kind, data[start:end], padded


def _matrix(payload: bytes, order: str, key: str, path: Path) -> np.ndarray | None:
    """The array of an miMATRIX element if it is named ``key`` (else None)."""
    parts: list[tuple[int, bytes]] = []
    offset = 0
    while offset + 8 <= len(payload) and len(parts) < 5:
        kind, value, offset = _element(payload, offset, order, path)
        parts.append((kind, value))
    if len(parts) < 3 or parts[0][0] != _MI_UINT32 or parts[1][0] != _MI_INT32 or parts[2][0] != _MI_INT8:
        if not parts:  # an empty matrix element (MATLAB writes these for []): nothing to read
            return None
        raise ConfigError(f"{path}: corrupt .mat file (a matrix without flags, dimensions or name)")
    if parts[2][1].decode("latin-1") != key:
        return None
    flags = np.frombuffer(parts[0][1][:4], dtype=f"{order}u4")[0]
    mx_class, complex_ = int(flags & 0xFF), bool(flags & 0x0800)
    if mx_class not in _NUMERIC_CLASSES:
        what = _CLASS_NAMES.get(mx_class, f"class {mx_class}")
        raise ConfigError(f"{path}: {key!r} is a {what}, not a numeric matrix")
    if complex_:
        raise ConfigError(f"{path}: {key!r} is complex; a real matrix is expected")
    dims = [int(d) for d in np.frombuffer(parts[1][1], dtype=f"{order}i4")]
    if len(parts) < 4 or parts[3][0] not in _NUMERIC_TYPES:
        raise ConfigError(f"{path}: {key!r} has no numeric data")
    kind, raw = parts[3]
    dtype = np.dtype(f"{order}{_NUMERIC_TYPES[kind]}")
    count = int(np.prod(dims)) if dims else 0
    if any(d < 0 for d in dims) or len(raw) != count * dtype.itemsize:
        raise ConfigError(f"{path}: {key!r} holds {len(raw)} bytes for a {'×'.join(map(str, dims))} matrix")
    return np.frombuffer(raw, dtype=dtype).astype(np.float64).reshape(dims, order="F")
