"""Private: safetensors checkpoints, read without torch and checked before any read.

The format (huggingface/safetensors): 8 bytes, a little-endian u64 `N`; `N`
bytes of a JSON header, `{name: {"dtype": "F32", "shape": [...],
"data_offsets": [begin, end]}, "__metadata__": {str: str}}`; then the data,
the offsets counted from its start. No code, no pickle.

Everything the header says is checked before a byte of data is read, as the
format's own reader checks it: the header fits in the file and is a JSON
object of tensor entries; each dtype is known (bfloat16 and the float8 kinds
through `ml_dtypes`); each shape is a list of non-negative ints; each range
holds exactly `prod(shape) * itemsize` bytes; and the ranges tile the data,
with no overlap, no gap and nothing after them. A file that lies is refused,
naming the file and the tensor, and nothing is read.

A sharded checkpoint (`model.safetensors.index.json`, whose `weight_map`
names each tensor's shard) is read the same way, shard by shard; a shard must
be a plain file name beside the index.
"""

import dataclasses
import json
import math
import os
import struct

import ml_dtypes
import numpy as np

from keras_transfer import errors

MAX_HEADER = 100_000_000  # bytes; the format's own limit
INDEX_SUFFIX = ".safetensors.index.json"
DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn), "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One tensor of a safetensors file, as its (checked) header describes it."""

    name: str
    dtype: np.dtype
    shape: tuple
    start: int  # absolute offset in the file
    size: int  # bytes


def is_safetensors(f):
    """True if the open binary file `f` starts like a safetensors file: a
    header length that fits the file, then `{`."""
    size = os.fstat(f.fileno()).st_size
    f.seek(0)
    head = f.read(9)
    if len(head) < 9:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 2 <= length <= min(MAX_HEADER, size - 8) and head[8:9] == b"{"


def read_header(f, path):
    """The tensors the open file `f` holds, every entry checked; see the module.

    Raises:
        WeightFileError: the header is missing, too long, not JSON, or lies
            about a tensor (unknown dtype, bad shape, a range of the wrong
            size, outside the data, or overlapping another).
    """
    size = os.fstat(f.fileno()).st_size
    f.seek(0)
    head = f.read(8)
    if len(head) < 8:
        raise errors.WeightFileError(f"{path}: too short for a safetensors file ({size} bytes).")
    (length,) = struct.unpack("<Q", head)
    if length > MAX_HEADER or 8 + length > size:
        raise errors.WeightFileError(
            f"{path}: the safetensors header claims {length} bytes, but the file has "
            f"{size}: it is truncated or not a safetensors file.")
    try:
        header = json.loads(f.read(length).decode("utf8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise errors.WeightFileError(
            f"{path}: the safetensors header is not valid JSON ({e}).") from e
    if not isinstance(header, dict):
        raise errors.WeightFileError(f"{path}: the safetensors header is not a JSON object.")
    data_start, data_size = 8 + length, size - 8 - length
    tensors = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        tensors.append(_tensor(name, entry, data_start, data_size, path))
    # As the format's reader: the ranges tile the data, in order, with no gap,
    # no overlap and nothing after them.
    ranges = sorted((t.start, t.start + t.size, t.name) for t in tensors)
    for (_, stop, first), (begin, _, second) in zip(ranges, ranges[1:]):
        if begin < stop:
            raise errors.WeightFileError(
                f"{path}: tensors '{first}' and '{second}' overlap in the file's data: "
                "the header lies. Nothing was loaded.")
    end = data_start
    for begin, stop, name in ranges:
        if begin > end:
            raise errors.WeightFileError(
                f"{path}: {begin - end} bytes before tensor '{name}' belong to no tensor: "
                "the header does not describe the data. Nothing was loaded.")
        end = stop
    if end != data_start + data_size:
        raise errors.WeightFileError(
            f"{path}: {data_start + data_size - end} bytes after the last tensor belong to "
            "no tensor: the header does not describe the data. Nothing was loaded.")
    return tensors


def _tensor(name, entry, data_start, data_size, path):
    where = f"{path}: tensor '{name}'"
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
        raise errors.WeightFileError(
            f"{where}: expected an entry with dtype, shape and data_offsets, received "
            f"{entry!r:.200}.")
    dtype = DTYPES.get(entry["dtype"]) if isinstance(entry["dtype"], str) else None
    if dtype is None:
        raise errors.WeightFileError(
            f"{where}: dtype {entry['dtype']!r} is not one of {sorted(DTYPES)}.")
    shape, offsets = entry["shape"], entry["data_offsets"]
    if not isinstance(shape, list) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise errors.WeightFileError(f"{where}: shape {shape!r} is not a list of sizes.")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(
            isinstance(n, int) and not isinstance(n, bool) for n in offsets):
        raise errors.WeightFileError(
            f"{where}: data_offsets {offsets!r} is not a [begin, end] pair of ints.")
    begin, end = offsets
    if not 0 <= begin <= end <= data_size:
        raise errors.WeightFileError(
            f"{where}: data_offsets [{begin}, {end}] lie outside the file's {data_size} "
            "bytes of data: the header lies or the file is truncated. Nothing was loaded.")
    expected = math.prod(shape) * dtype.itemsize
    if end - begin != expected:
        raise errors.WeightFileError(
            f"{where}: {end - begin} bytes for a {entry['dtype']} tensor of shape "
            f"{tuple(shape)}, which takes {expected}: the header lies. Nothing was loaded.")
    return Tensor(name, dtype, tuple(shape), data_start + begin, end - begin)


def read_tensor(f, tensor, path):
    """The tensor's values, read from the open file `f` into one new array.

    Raises:
        WeightFileError: the file ended before the tensor did (it changed
            since its header was read).
    """
    array = np.empty(tensor.shape, tensor.dtype)
    f.seek(tensor.start)
    got = f.readinto(array.reshape(-1).view(np.uint8)) if tensor.size else 0
    if got != tensor.size:
        raise errors.WeightFileError(
            f"{path}: tensor '{tensor.name}' ended after {got} of {tensor.size} bytes: "
            "the file changed while it was read, or is damaged. Nothing was loaded.")
    return array


def read_index(path):
    """The shards of a sharded checkpoint: `{shard path: [tensor names]}`.

    Raises:
        WeightFileError: the index is not JSON, has no `weight_map`, or names
            a shard that is not a plain file name beside it.
    """
    try:
        with open(path, encoding="utf8") as f:
            index = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise errors.WeightFileError(f"{path}: cannot read the shard index ({e}).") from e
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise errors.WeightFileError(
            f"{path}: a shard index needs a non-empty `weight_map` of tensor -> file.")
    folder = os.path.dirname(os.path.abspath(path))
    shards = {}
    for name, shard in weight_map.items():
        if (not isinstance(shard, str) or os.path.basename(shard) != shard
                or shard in ("", ".", "..")):
            raise errors.WeightFileError(
                f"{path}: tensor '{name}' is in shard {shard!r}, which is not a plain "
                "file name beside the index; refusing it.")
        shards.setdefault(os.path.join(folder, shard), []).append(name)
    return shards
