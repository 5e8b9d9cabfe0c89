"""The packed model file: a small versioned header, then raw little-endian arrays. Nothing in it is executable and
nothing is unpickled: it is read with ``struct``, ``json`` and ``numpy.frombuffer`` only.

Layout (version 2)::

    offset  size  field
    0       8     magic  b"\\x89LBPACK\\n"  (a non-ASCII first byte and a newline, as PNG does, so that a text
                  transfer or a file of another kind is caught at once)
    8       4     format version, uint32 little-endian (2)
    12      4     header length H in bytes, uint32 little-endian
    16      4     CRC-32 of the header bytes, uint32 little-endian
    20      H     header: UTF-8 JSON object (below)
    ...           zero bytes up to the next multiple of 64
    D       S     data: the arrays, each starting at a multiple of 64 bytes from D; S = header["data_bytes"]

The file ends exactly at D + S. Header::

    {"format": "lowbit-repro packed network", "version": 2,
     "meta": {...},                      # what the exporter was given: config name, in_shape, num_classes, ...
     "layers": [{"op": ..., ...}, ...],  # see engine.export for the ops; arrays are named by "key" entries
     "arrays": {name: {"dtype": "uint8|int8|int16|int32|float32", "shape": [...], "offset": int}},
     "data_bytes": S, "data_crc32": crc}

Every problem found on reading (missing, truncated, another version, not this format, corrupt) is a
``common.errors.UserError`` of one line naming the file and what is wrong.
"""
from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.errors import UserError

MAGIC = b"\x89LBPACK\n"
VERSION = 2  # 2: a layer's weight bits in one row, folded max poolings ("pool"), float32 "threshold" ops
FORMAT_NAME = "lowbit-repro packed network"
ALIGN = 64
_PREFIX = struct.Struct("<8sIII")  # magic, version, header length, header crc32
DTYPES = {"uint8": "<u1", "int8": "<i1", "int16": "<i2", "int32": "<i4", "float32": "<f4"}


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


@dataclass
class Packed:
    """A packed network in memory: the layer list, the arrays by name, and the metadata."""

    layers: list[dict]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


def write(packed: Packed, path: Path) -> int:
    """Write ``packed`` to ``path`` (through a temporary file, renamed into place); returns the file's size."""
    path = Path(path)
    specs, chunks, offset = {}, [], 0
    for name, a in packed.arrays.items():
        kind = a.dtype.name
        if kind not in DTYPES:
            raise TypeError(f"array {name}: dtype {kind} is not one the format stores")
        raw = np.ascontiguousarray(a, dtype=DTYPES[kind]).tobytes()
        specs[name] = {"dtype": kind, "shape": list(a.shape), "offset": offset}
        pad = _align(len(raw)) - len(raw)
        chunks += [raw, b"\0" * pad]
        offset += len(raw) + pad
    data = b"".join(chunks)
    header = json.dumps({"format": FORMAT_NAME, "version": VERSION, "meta": packed.meta, "layers": packed.layers,
                         "arrays": specs, "data_bytes": len(data), "data_crc32": zlib.crc32(data)},
                        separators=(",", ":"), allow_nan=False).encode()
    head = _PREFIX.pack(MAGIC, VERSION, len(header), zlib.crc32(header)) + header
    head += b"\0" * (_align(len(head)) - len(head))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(head)
        f.write(data)
    tmp.replace(path)
    return len(head) + len(data)


def read(path: Path) -> Packed:
    """Read a packed network; a ``UserError`` (one line, naming the file) for anything that is not a whole, intact
    file of this format and version."""
    path = Path(path)

    def bad(what: str) -> UserError:
        return UserError(f"packed model {path}: {what}")

    if not path.is_file():
        raise bad("no such file")
    try:
        buf = path.read_bytes()
    except OSError as e:
        raise bad(f"cannot be read ({e.strerror or type(e).__name__})") from None
    if len(buf) < len(MAGIC) and MAGIC.startswith(buf) and buf:
        raise bad(f"truncated: {len(buf)} bytes, shorter than the magic bytes")
    if len(buf) < len(MAGIC) or buf[:len(MAGIC)] != MAGIC:
        raise bad("not a packed network file of this suite (wrong magic bytes)")
    if len(buf) < _PREFIX.size:
        raise bad(f"truncated: {len(buf)} bytes, shorter than the {_PREFIX.size}-byte prefix")
    _, version, hlen, hcrc = _PREFIX.unpack_from(buf)
    if version != VERSION:
        raise bad(f"format version {version}; this engine reads version {VERSION} (re-export it with this suite)")
    start = _PREFIX.size
    if len(buf) < start + hlen:
        raise bad(f"truncated: {len(buf)} bytes, the header alone needs {start + hlen}")
    hbytes = buf[start:start + hlen]
    if zlib.crc32(hbytes) != hcrc:
        raise bad("corrupt header (checksum mismatch)")
    try:
        header = json.loads(hbytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise bad("corrupt header (not JSON)") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME or header.get("version") != VERSION:
        raise bad("corrupt header (not this format's)")
    data_at = _align(start + hlen)
    size = header.get("data_bytes")
    if not isinstance(size, int) or size < 0:
        raise bad("corrupt header (data_bytes)")
    if len(buf) < data_at + size:
        raise bad(f"truncated: {len(buf)} bytes, expected {data_at + size}")
    if len(buf) > data_at + size:
        raise bad(f"{len(buf) - data_at - size} unexpected bytes after the end of the data (expected {data_at + size})")
    data = memoryview(buf)[data_at:]
    if zlib.crc32(data) != header.get("data_crc32"):
        raise bad("corrupt data (checksum mismatch)")
    arrays = {}
    specs = header.get("arrays")
    if not isinstance(specs, dict) or not isinstance(header.get("layers"), list):
        raise bad("corrupt header (no layer list or array table)")
    for name, s in specs.items():
        try:
            dt = np.dtype(DTYPES[s["dtype"]])
            shape = tuple(int(d) for d in s["shape"])
            off = int(s["offset"])
            count = int(np.prod(shape, dtype=np.int64))
            if off < 0 or min(shape, default=0) < 0 or off + count * dt.itemsize > size:
                raise ValueError
            arrays[name] = np.frombuffer(data, dtype=dt, count=count, offset=off).reshape(shape)
        except (KeyError, TypeError, ValueError):
            raise bad(f"corrupt header (array {name!r})") from None
    for i, layer in enumerate(header["layers"]):
        refs = layer.get("arrays", {}) if isinstance(layer, dict) else None
        if not isinstance(layer.get("op") if refs is not None else None, str) or not isinstance(refs, dict):
            raise bad(f"corrupt header (layer {i})")
        for key, ref in refs.items():
            if not isinstance(ref, str) or ref not in arrays:
                raise bad(f"corrupt header (layer {i} names a missing array {ref!r})")
    meta = header.get("meta", {})
    if not isinstance(meta, dict):
        raise bad("corrupt header (meta is not an object)")
    return Packed(layers=header["layers"], arrays=arrays, meta=meta)
