"""Read a PyTorch state dict of the legacy (pre-zip) format with numpy, never torch.

A `.pth` file is a pickle, and unpickling runs whatever callables the file names: a
checkpoint from a package could run any code at load time. Here every global the pickle
asks for is looked up in ALLOWED_GLOBALS, which names only what a state dict of float and
int64 tensors needs; anything else (os.system, builtins.eval, torch itself...) raises
UnsafeCheckpoint before it is called. Nothing from torch is imported: the tensor and
storage globals are replaced by small numpy stand-ins.

The legacy format (torch.save with _use_new_zipfile_serialization=False, the default
before torch 1.6) is, in order:

1. three small pickles: a magic number, the protocol version (1001) and a sys_info dict;
2. the state dict itself, whose tensors are `torch._utils._rebuild_tensor_v2(storage,
   offset, size, stride, ...)` calls and whose storages are persistent ids
   ("storage", storage type, key, location, element count, view metadata);
3. a pickled list of storage keys, in the order their bytes follow;
4. for each key: its element count (int64, little-endian), then its raw elements.

The zip format of torch >= 1.6 is not read: the one checkpoint we load predates it.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgexray.errors import EdgexrayError, UnsafeCheckpoint

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
ZIP_MAGIC = b"PK\x03\x04"
COUNT = struct.Struct("<q")  # a storage's element count, before its bytes

# The storage types a state dict of weights and BatchNorm counters uses.
STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "LongStorage": np.dtype("<i8"),
}


@dataclass
class _Storage:
    """A storage named by the pickle; its elements are read after the pickle ends."""

    dtype: np.dtype
    count: int
    elements: np.ndarray | None = None


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclass(frozen=True)
class _TensorRecipe:
    """What `_rebuild_tensor_v2` was asked to build: a strided view of a storage."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def build(self) -> np.ndarray:
        steps = zip(self.shape, self.stride, strict=True)
        extent = self.offset + sum((n - 1) * s for n, s in steps)
        if any(n == 0 for n in self.shape):
            return np.zeros(self.shape, self.storage.dtype)
        if self.offset < 0 or extent >= self.storage.count or min(self.stride, default=0) < 0:
            raise EdgexrayError(
                f"a tensor of shape {self.shape} at offset {self.offset} lies outside its "
                f"storage of {self.storage.count} elements"
            )
        elements = self.storage.elements
        itemsize = elements.itemsize
        view = np.lib.stride_tricks.as_strided(
            elements[self.offset :],
            shape=self.shape,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        )
        return np.ascontiguousarray(view).astype(elements.dtype.newbyteorder("="))


def _rebuild_tensor_v2(storage, offset, shape, stride, requires_grad, hooks, metadata=None):
    if not isinstance(storage, _Storage):
        raise EdgexrayError("a tensor is not built on a storage")
    if not (
        isinstance(offset, int)
        and isinstance(shape, tuple)
        and isinstance(stride, tuple)
        and len(shape) == len(stride)
        and all(isinstance(n, int) and n >= 0 for n in shape)
        and all(isinstance(s, int) for s in stride)
    ):
        raise EdgexrayError(f"a tensor has a malformed shape {shape!r} or stride {stride!r}")
    return _TensorRecipe(storage, offset, shape, stride)


# (module, name) -> what the unpickler gets instead. Only these; see the module docstring.
ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    **{("torch", name): _StorageType(dtype) for name, dtype in STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict[str, _Storage]):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module, name):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeCheckpoint(
                f"the checkpoint asks for {module}.{name}, which a state dict of tensors "
                f"never needs; refused"
            ) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise UnsafeCheckpoint(f"the checkpoint holds a persistent id {pid!r}; refused")
        _, storage_type, key, _location, count, view = pid
        if not isinstance(storage_type, _StorageType):
            raise UnsafeCheckpoint(f"storage of unknown type {storage_type!r}; refused")
        if not (isinstance(key, str) and isinstance(count, int) and count >= 0):
            raise EdgexrayError(f"malformed storage id {pid!r}")
        if view is not None:
            raise EdgexrayError("storage views (torch < 0.4 checkpoints) are not supported")
        storage = self.storages.setdefault(key, _Storage(storage_type.dtype, count))
        if storage.dtype != storage_type.dtype or storage.count != count:
            raise EdgexrayError(f"storage {key} is named with two types or sizes")
        return storage


def _load(file, storages: dict[str, _Storage]):
    try:
        return _RestrictedUnpickler(file, storages).load()
    except EdgexrayError:  # UnsafeCheckpoint among them
        raise
    except Exception as err:  # a truncated or garbled pickle raises anything at all
        raise EdgexrayError(f"not a readable PyTorch checkpoint ({err})") from None


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a legacy-format PyTorch state dict, as numpy arrays by name.

    Raises:
        UnsafeCheckpoint: the pickle names a global outside ALLOWED_GLOBALS.
        EdgexrayError: not a legacy PyTorch checkpoint, or truncated or inconsistent.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise EdgexrayError(f"cannot read checkpoint {path}: {err.strerror}") from None
    if raw.startswith(ZIP_MAGIC):
        raise EdgexrayError(f"{path} is a zip-format (torch >= 1.6) checkpoint: not supported")
    file = io.BytesIO(raw)
    storages: dict[str, _Storage] = {}
    if _load(file, storages) != MAGIC_NUMBER:
        raise EdgexrayError(f"{path} is not a PyTorch checkpoint (wrong magic number)")
    if _load(file, storages) != PROTOCOL_VERSION:
        raise EdgexrayError(f"{path}: unsupported PyTorch checkpoint protocol")
    sys_info = _load(file, storages)
    if not (isinstance(sys_info, dict) and sys_info.get("little_endian") is True):
        raise EdgexrayError(f"{path}: only little-endian checkpoints are supported")
    state = _load(file, storages)
    keys = _load(file, storages)
    if not isinstance(state, dict) or not isinstance(keys, list) or set(keys) != set(storages):
        raise EdgexrayError(f"{path}: the checkpoint's storages do not match its tensors")
    for key in keys:
        storage = storages[key]
        header = file.read(COUNT.size)
        if len(header) != COUNT.size or COUNT.unpack(header)[0] != storage.count:
            raise EdgexrayError(f"{path}: storage {key} is truncated or of the wrong size")
        size = storage.count * storage.dtype.itemsize
        data = file.read(size)
        if len(data) != size:
            raise EdgexrayError(f"{path}: storage {key} is truncated")
        storage.elements = np.frombuffer(data, storage.dtype)
    tensors = {}
    for name, value in state.items():
        if not (isinstance(name, str) and isinstance(value, _TensorRecipe)):
            raise EdgexrayError(f"{path}: entry {name!r} is not a tensor")
        tensors[name] = value.build()
    return tensors
