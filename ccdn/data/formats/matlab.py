"""Reading and writing the MATLAB ``.mat`` files the benchmarks ship, in both on-disk flavours.

* v5/v7 files (300W boxes, AFLW, COFW-68 points) are read with ``scipy.io.loadmat``;
* v7.3 files (the COFW colour sets) are HDF5 behind a 512-byte MATLAB header and need ``h5py``.
  HDF5 stores MATLAB's column-major arrays with their axes reversed, and cell arrays as datasets of
  object references into ``#refs#``.

:func:`load_mat` hides the difference: whatever the flavour, a numeric variable comes back in
MATLAB's orientation (``(rows, cols[, ...])``), a cell array as an object array of such values and
a char array as a one-element ``str`` array — i.e. what ``scipy.io.loadmat`` gives for v5 files.
The writers exist so ``ccdn synth`` can produce byte-identical files in the real formats; both
write under a temporary name and rename, and stamp a fixed header date so a seed fully determines
the bytes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.io

from ccdn.data.formats.common import format_error
from ccdn.io import atomic_path, write_bytes

__all__ = ["load_mat", "is_hdf5_mat", "save_mat_v5", "save_mat_v73", "as_matrix", "as_string", "MAT_HEADER_DATE"]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
MAT_HEADER_DATE = "Thu Jan  1 00:00:00 1970"  # fixed so generated files do not depend on the clock
_PLATFORM = "GLNXA64"


def is_hdf5_mat(path: Path) -> bool:
    """True for a MATLAB v7.3 file (HDF5 signature after the 512-byte header, or at offset 0)."""
    with open(path, "rb") as handle:
        head = handle.read(520)
    return head[:8] == HDF5_SIGNATURE or head[512:520] == HDF5_SIGNATURE


def load_mat(path: Path, keys: Sequence[str], fix: str, optional: Sequence[str] = ()) -> dict[str, Any]:
    """Load the variables ``keys`` (required) and ``optional`` from a v5 or v7.3 ``.mat`` file.

    Raises ``DataFormatError`` naming the file when it is missing or unreadable, and naming the
    variable (and the variables that are there) when one of ``keys`` is absent. Absent optional
    variables are simply left out of the result.
    """
    path = Path(path)
    if not path.is_file():
        raise format_error(path, "file not found", fix)
    try:
        wanted = [*keys, *optional]
        values, present = _load_hdf5(path, wanted) if is_hdf5_mat(path) else _load_v5(path)
    except (OSError, ValueError, TypeError, NotImplementedError, KeyError) as exc:
        raise format_error(path, f"cannot read this .mat file ({type(exc).__name__}: {exc})", fix) from exc
    missing = [key for key in keys if key not in values]
    if missing:
        raise format_error(
            path, f"variable {missing[0]!r} is missing (variables present: {', '.join(present) or 'none'})", fix
        )
    return {key: values[key] for key in wanted if key in values}


def _load_v5(path: Path) -> tuple[dict[str, Any], list[str]]:
    values = scipy.io.loadmat(str(path), squeeze_me=False, struct_as_record=False, mat_dtype=False)
    return values, sorted(k for k in values if not k.startswith("__"))


def _load_hdf5(path: Path, keys: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    with h5py.File(path, "r") as handle:
        present = sorted(k for k in handle if not k.startswith("#"))  # #refs#, #subsystem# are plumbing
        return {key: _read_h5_value(handle, handle[key]) for key in keys if key in handle}, present


def _read_h5_value(handle: h5py.File, node: h5py.Dataset | h5py.Group) -> Any:
    if isinstance(node, h5py.Group):
        raise ValueError(f"variable {node.name!r} is a struct/object; only numeric, char and cell are supported")
    matlab_class = _attr_str(node, "MATLAB_class")
    if node.attrs.get("MATLAB_empty", 0):
        return np.zeros((0, 0))
    data = node[()]
    if matlab_class == "cell" or data.dtype == h5py.ref_dtype:
        refs = np.asarray(data).T
        out = np.empty(refs.shape, dtype=object)
        for index in np.ndindex(refs.shape):
            out[index] = _read_h5_value(handle, handle[refs[index]])
        return out
    if matlab_class == "char":
        text = "".join(chr(c) for c in np.asarray(data).T.ravel(order="F"))
        return np.array([text])
    array = np.asarray(data).T
    if matlab_class == "logical":
        array = array.astype(bool)
    return array


def _attr_str(node: h5py.Dataset, name: str) -> str:
    value = node.attrs.get(name, b"")
    return value.decode() if isinstance(value, bytes) else str(value)


def as_matrix(
    value: Any, path: Path, key: str, columns: int | None = None, fix: str = "re-download the file"
) -> np.ndarray:
    """A numeric 2-D float64 matrix, optionally with an exact column count, or a clear error."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise format_error(path, f"variable {key!r} is not numeric", fix) from exc
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or (columns is not None and array.shape[1] != columns):
        want = f"(N, {columns})" if columns is not None else "2-D"
        raise format_error(path, f"variable {key!r} has shape {array.shape}, expected {want}", fix)
    return array


def as_string(value: Any) -> str:
    """A MATLAB char array (as loaded by :func:`load_mat`) as a Python string."""
    array = np.asarray(value)
    if array.dtype.kind == "U":
        return "".join(str(s) for s in array.ravel())
    if array.dtype == object and array.size == 1:
        return as_string(array.ravel()[0])
    raise TypeError(f"not a char array: dtype {array.dtype}, shape {array.shape}")


# ----------------------------------------------------------------------------------------- writers


def _header_text(version: str, suffix: str = "") -> bytes:
    text = f"MATLAB {version} MAT-file, Platform: {_PLATFORM}, Created on: {MAT_HEADER_DATE}{suffix}"
    return text.encode("ascii").ljust(116, b" ")


def save_mat_v5(path: Path, variables: dict[str, Any]) -> None:
    """Write a v5 ``.mat`` (what MATLAB's default ``save`` reads) with a fixed header date.

    Values follow ``scipy.io.savemat`` conventions: arrays, object arrays for cells (dicts inside
    become structs), strings for char arrays.
    """
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, variables, format="5", oned_as="row", do_compression=False)
    data = bytearray(buffer.getvalue())
    data[:116] = _header_text("5.0")
    write_bytes(Path(path), bytes(data))


_COMPRESS_FROM = 4096  # bytes; small arrays stay contiguous
_H5_CLASS = {
    np.dtype(np.float64): "double",
    np.dtype(np.float32): "single",
    np.dtype(np.uint8): "uint8",
    np.dtype(np.int32): "int32",
    np.dtype(np.uint16): "uint16",
}


def save_mat_v73(path: Path, variables: dict[str, np.ndarray]) -> None:
    """Write a MATLAB v7.3 file: HDF5 with the 512-byte MATLAB header as its user block.

    Numeric arrays are given in MATLAB orientation and stored transposed, as MATLAB does; an object
    array is written as a cell array whose elements live in ``#refs#`` and are referenced by object
    references, so :func:`load_mat` (and any h5py reader of real COFW files) parses it unchanged.
    """
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", userblock_size=512, libver="earliest") as handle:
            refs = handle.create_group("#refs#")
            counter = [0]
            for name, value in variables.items():
                _write_h5_variable(handle, refs, handle, name, value, counter)
        header = _header_text("7.3", " HDF5 schema 1.00 .") + b"\x00" * 8 + b"\x00\x02" + b"IM"
        with open(tmp, "r+b") as raw:
            raw.write(header.ljust(512, b"\x00"))


def _ref_name(index: int) -> str:
    """MATLAB-style names for ``#refs#`` members: a, b, ..., z, ba, bb, ..."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    name = letters[index % 26]
    index //= 26
    while index:
        name = letters[index % 26] + name
        index //= 26
    return name


def _write_h5_variable(
    handle: h5py.File, refs: h5py.Group, parent: h5py.Group, name: str, value: np.ndarray, counter: list[int]
) -> h5py.Dataset:
    array = np.asarray(value)
    if array.dtype == object:
        ref_array = np.empty(array.T.shape, dtype=h5py.ref_dtype)
        for index in np.ndindex(array.shape):
            member = _ref_name(counter[0])
            counter[0] += 1
            dataset = _write_h5_variable(handle, refs, refs, member, array[index], counter)
            ref_array[index[::-1]] = dataset.ref
        dataset = parent.create_dataset(name, data=ref_array, dtype=h5py.ref_dtype)
        dataset.attrs["MATLAB_class"] = np.bytes_("cell")
        return dataset
    if array.dtype == bool:
        dataset = parent.create_dataset(name, data=np.ascontiguousarray(array.T.astype(np.uint8)))
        dataset.attrs["MATLAB_class"] = np.bytes_("logical")
        dataset.attrs["MATLAB_int_decode"] = np.int32(1)
        return dataset
    if array.dtype not in _H5_CLASS:
        raise TypeError(f"cannot write {name!r} with dtype {array.dtype} to a v7.3 .mat file")
    if array.ndim < 2:
        array = array.reshape(1, -1)
    data = np.ascontiguousarray(array.T)
    compress = {"compression": "gzip", "compression_opts": 4} if data.nbytes >= _COMPRESS_FROM else {}
    dataset = parent.create_dataset(name, data=data, **compress)  # MATLAB compresses v7.3 data too
    dataset.attrs["MATLAB_class"] = np.bytes_(_H5_CLASS[array.dtype])
    return dataset
