"""Records <-> tensors without extra copies, and the protocol's record and config keys.

An ``ArrayRecord`` holds each array as serialized ``.npy`` bytes. ``Array.numpy()`` goes
through ``np.load`` and copies the data; :func:`array_to_tensor` instead parses the ``.npy``
header and wraps the bytes that follow it with ``torch.frombuffer`` (read-only view, no copy).
:func:`tensor_to_array` writes a header plus the raw bytes (one copy, like ``np.save``).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

import fedadapt

# ---------------------------------------------------------------- protocol keys (CONTRACTS §2-3)
ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
CLIENTS = "fedadapt.clients"
SIGNALS = "fedadapt.signals"
GLOBAL_UPDATE = "fedadapt.global-update"  # x_t - x_{t-1} for clients that need it (FedHyper-CL)

CFG_ROUND = "server-round"
CFG_CLIENT_IDS = "fedadapt.client-ids"
CFG_CLIENT_LRS = "fedadapt.client-lrs"
CFG_OPTIMIZER = "fedadapt.optimizer"
CFG_OPTIMIZER_OPTIONS = "fedadapt.optimizer-options"
CFG_SIGNALS = "fedadapt.signals"
CFG_REPLY_MODE = "fedadapt.reply-mode"
CFG_BUFFER_KEYS = "fedadapt.buffer-keys"
CFG_APP_LR = "lr"  # the lr a Flower app puts in its train config (quickstart convention)
# what the server method asks of the clients this round (fedadapt.ServerOptimizer.client_hints):
# "fedadapt.hint.local-work", "fedadapt.hint.lr-scale", "fedadapt.hint.early-stop-gamma", ...
CFG_HINT_PREFIX = "fedadapt.hint."

NUM_EXAMPLES = "num-examples"
TRAIN_LOSS = "train-loss"
TRAIN_LOSS_ALIASES = (TRAIN_LOSS, "train_loss")  # fedadapt's key, then Flower quickstart's
EVAL_LOSS = "eval-loss"

# keys of the "fedadapt.clients" ConfigRecord (per-client lists, aligned; CONTRACTS §3): the
# client writer (strategies.client) and the server reader (strategies.validation) use these
C_IDS = "ids"
C_NUM_EXAMPLES = "num-examples"
C_TRAIN_LOSS = "train-loss"
C_START_LOSS = "start-loss"  # the loss before any local step (the server's change detector)
TRAIN_LOSS_ALIASES = (TRAIN_LOSS, "train_loss")  # fedadapt's key, then Flower quickstart's
C_LR = "lr"
C_STEP_MEAN = "step-mean"
C_STEP_MIN = "step-min"
C_STEP_MAX = "step-max"
C_SQ_NORM = "sq-norm"
C_FAILED_IDS = "failed-ids"
C_FAILED_REASONS = "failed-reasons"
STEP_STAT_KEYS = (C_LR, C_STEP_MEAN, C_STEP_MIN, C_STEP_MAX)  # fedadapt.step_size_stats keys
CLIENT_STAT_KEYS = (C_TRAIN_LOSS, C_START_LOSS, *STEP_STAT_KEYS)

# signal names: fedadapt's own constants (ServerOptimizer keyword arguments, CONTRACTS §1)
SIG_SQ_NORMS = fedadapt.SIG_CLIENT_SQ_NORMS_MEAN
SIG_NUM_CLIENTS = fedadapt.SIG_NUM_CLIENTS
SIG_SQ_MEAN = fedadapt.SIG_CLIENT_SQ_MEAN
KNOWN_SIGNALS = fedadapt.KNOWN_SIGNALS
# the signals a reply must carry (the others the server computes itself, e.g. num_clients)
REPLY_SIGNALS = (SIG_SQ_NORMS, SIG_SQ_MEAN)

REPLY_MODES = ("mean", "per-client")
NO_LR = -1.0  # "no carried lr" marker in fedadapt.client-lrs

# names of state-dict entries that are buffers, not parameters (averaged, never stepped)
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")

_NPY = "numpy.ndarray"


def is_buffer_key(key: str, dtype: str, extra: frozenset[str] | set[str] = frozenset()) -> bool:
    """True for entries the server averages but never steps: non-float dtypes, BN statistics."""
    if key in extra:
        return True
    if not np.issubdtype(np.dtype(dtype), np.floating):
        return True
    return key.endswith(BUFFER_SUFFIXES)


def torch_dtype(dtype: str) -> torch.dtype:
    """The torch dtype of a numpy dtype string (``"float32"`` -> ``torch.float32``)."""
    return torch.from_numpy(np.empty(0, dtype=np.dtype(dtype))).dtype


def npy_layout(array: Array) -> tuple[np.dtype, tuple[int, ...], int]:
    """Parse the ``.npy`` header of ``array.data``: (dtype, shape, byte offset of the data).

    Raises ``ValueError`` for anything that is not a C-ordered ``.npy`` blob whose header agrees
    with ``array.dtype`` / ``array.shape`` and whose length matches.
    """
    if array.stype != _NPY:
        raise ValueError(f"unsupported stype {array.stype!r} (expected {_NPY!r})")
    data = array.data
    if not isinstance(data, bytes | bytearray | memoryview) or len(data) < 10:
        raise ValueError("array data is empty or not bytes")
    head = io.BytesIO(bytes(data[: min(len(data), 65536 + 16)]))
    try:
        version = np.lib.format.read_magic(head)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(head)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(head)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a malformed array
        raise ValueError(f"malformed .npy header: {exc}") from exc
    if fortran and len(shape) > 1:
        raise ValueError("fortran-ordered arrays are not supported")
    if dtype.hasobject:
        raise ValueError("object arrays are not allowed")
    if str(dtype) != str(array.dtype) or tuple(shape) != tuple(array.shape):
        raise ValueError(
            f"header says {dtype}{tuple(shape)}, Array says {array.dtype}{tuple(array.shape)}"
        )
    offset = head.tell()
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - offset != nbytes:
        raise ValueError(f"expected {nbytes} data bytes, found {len(data) - offset}")
    return dtype, tuple(shape), offset


def array_to_tensor(array: Array) -> torch.Tensor:
    """Read-only torch view of an ``Array``'s data (no copy). Do not write into it."""
    dtype, shape, offset = npy_layout(array)
    count = int(np.prod(shape, dtype=np.int64))
    if dtype.byteorder == ">":
        # rare: big-endian payload, needs a byte-swapping copy
        return torch.from_numpy(
            np.frombuffer(array.data, dtype=dtype, count=count, offset=offset)
            .astype(dtype.newbyteorder("="))
            .reshape(shape)
        )
    flat = np.frombuffer(array.data, dtype=dtype, count=count, offset=offset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "non-writable array": we only read
        return torch.from_numpy(flat).reshape(shape)


def tensor_to_array(tensor: torch.Tensor) -> Array:
    """Serialize a tensor as a ``.npy`` ``Array`` (same bytes ``Array(ndarray)`` produces)."""
    arr = tensor.detach().cpu().contiguous().numpy()
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, np.lib.format.header_data_from_array_1_0(arr))
    # one copy into an exactly sized bytes object (np.save goes through a growing BytesIO)
    data = b"".join((head.getvalue(), memoryview(arr.reshape(-1)).cast("B")))  # type: ignore[arg-type]
    return Array(dtype=str(arr.dtype), shape=tuple(arr.shape), stype=_NPY, data=data)


def record_to_tensors(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """Read-only views of every array in the record, keyed like the record."""
    return {k: array_to_tensor(a) for k, a in record.items()}


def tensors_to_record(tensors: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """An ``ArrayRecord`` whose keys follow ``tensors``' order."""
    return ArrayRecord({k: tensor_to_array(t) for k, t in tensors.items()})


def layout_of(record: ArrayRecord) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Key -> (dtype string, shape) from the record's metadata (no decoding)."""
    return {k: (str(a.dtype), tuple(a.shape)) for k, a in record.items()}
