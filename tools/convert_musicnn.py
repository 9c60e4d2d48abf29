"""Convert the MSD musicnn checkpoint of the `musicnn` 0.1.0 wheel to mgc's weight file, with no
TensorFlow: a small reader of TensorFlow's checkpoint format (a LevelDB-format table of
BundleEntryProto records in `.index`, the raw little-endian tensors in `.data-00000-of-00001`).

    python tools/convert_musicnn.py musicnn-0.1.0-py3-none-any.whl mgc/pretrained/musicnn_msd.npz

The wheel is checked against the sha256 the weights were converted from (mgc/pretrained/README.md).
Only the network's weights are kept (no optimiser slots, no step counter), as float32.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import struct
import sys
import zipfile

import numpy as np

WHEEL_SHA256 = "f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa"
CHECKPOINT = "musicnn/MSD_musicnn/"
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64}  # TensorFlow's DataType enum
_MAGIC = 0xDB4775248B80FB57  # LevelDB table footer


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i


def _fields(msg: bytes):
    """(field number, value) of a protobuf message: ints for varints, bytes for the rest."""
    i = 0
    while i < len(msg):
        key, i = _varint(msg, i)
        kind = key & 7
        if kind == 0:
            value, i = _varint(msg, i)
        elif kind == 2:
            n, i = _varint(msg, i)
            value, i = msg[i : i + n], i + n
        elif kind == 5:
            value, i = msg[i : i + 4], i + 4
        elif kind == 1:
            value, i = msg[i : i + 8], i + 8
        else:
            raise ValueError(f"protobuf wire type {kind} not expected in a checkpoint index")
        yield key >> 3, value


def _block(table: bytes, offset: int, size: int):
    """The (key, value) entries of one table block (keys prefix-compressed, uncompressed block)."""
    if table[offset + size] != 0:
        raise ValueError("compressed checkpoint index blocks are not supported")
    data = table[offset : offset + size]
    restarts = struct.unpack_from("<I", data, len(data) - 4)[0]
    end, i, key = len(data) - 4 - 4 * restarts, 0, b""
    while i < end:
        shared, i = _varint(data, i)
        unshared, i = _varint(data, i)
        vlen, i = _varint(data, i)
        key = key[:shared] + data[i : i + unshared]
        i += unshared
        yield key, data[i : i + vlen]
        i += vlen


def read_checkpoint(index: bytes, data: bytes) -> dict[str, np.ndarray]:
    """Every tensor of a single-shard TensorFlow checkpoint, by variable name."""
    if struct.unpack_from("<Q", index, len(index) - 8)[0] != _MAGIC:
        raise ValueError("not a TensorFlow checkpoint index (bad table magic)")
    footer, i = index[-48:], 0
    _, i = _varint(footer, i)  # the meta-index block: unused
    _, i = _varint(footer, i)
    index_offset, i = _varint(footer, i)
    index_size, i = _varint(footer, i)
    tensors = {}
    for _, handle in _block(index, index_offset, index_size):
        offset, j = _varint(handle, 0)
        size, _ = _varint(handle, j)
        for name, entry in _block(index, offset, size):
            if not name:  # the bundle header
                continue
            f = dict(_fields(entry))
            shape = [dict(_fields(d)).get(1, 0) for k, d in _fields(f.get(2, b"")) if k == 2]
            dtype = _DTYPES[f.get(1, 1)]
            start, nbytes = f.get(4, 0), f.get(5, 0)
            tensors[name.decode()] = np.frombuffer(data[start : start + nbytes], dtype=dtype).reshape(shape)
    return tensors


def convert(wheel: str) -> dict[str, np.ndarray]:
    """The MSD musicnn weights of the `musicnn` wheel at `wheel`, checked against WHEEL_SHA256."""
    raw = open(wheel, "rb").read()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != WHEEL_SHA256:
        raise SystemExit(f"{wheel}: sha256 {digest}, expected {WHEEL_SHA256} (musicnn 0.1.0)")
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        tensors = read_checkpoint(z.read(CHECKPOINT + ".index"), z.read(CHECKPOINT + ".data-00000-of-00001"))
    return {
        k: v.astype(np.float32)
        for k, v in sorted(tensors.items())
        if "Adam" not in k and v.dtype.kind == "f" and "power" not in k
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("wheel")
    p.add_argument("out")
    args = p.parse_args(argv)
    weights = convert(args.wheel)
    np.savez(args.out, **weights)
    print(f"{len(weights)} tensors, {sum(v.size for v in weights.values()):,} weights -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
