"""Private: PyTorch state_dicts as by-name sources.

A state_dict maps a module path and a parameter name to a tensor
(`layer1.0.conv1.weight`). Here each module path becomes one source `Group`
(`layer1.0.conv1`) whose arrays are its parameters (`weight`), in PyTorch's
layout; `_torch_layout` converts them once the target layer is known.

Where the tensors come from:

- `.safetensors` files, single or sharded, read without torch (`_safetensors`);
- `.pt`, `.pth` and `.bin` files, through `torch.load(weights_only=True,
  map_location="cpu")` only: PyTorch's allow-list unpickler, which refuses a
  pickled callable before it runs. No other unpickler is ever used, so
  without torch such a file is refused with a message saying what to do;
- a dict in memory (`transfer_weights(state_dict, model, layout="torch")`),
  of numpy arrays or torch tensors.
"""

import pickle

import ml_dtypes
import numpy as np

from keras_transfer import _matching
from keras_transfer import _safetensors
from keras_transfer import errors

TORCH_SUFFIXES = (".pt", ".pth", ".bin")
# Keys a training checkpoint may wrap its state_dict in (timm, Lightning, ...).
_WRAPPERS = ("state_dict", "model", "model_state_dict", "module")


def groups_from_arrays(arrays, where):
    """Groups of a state_dict given as `{key: Array}` (one group per module).

    Keys without a module path (`weight` and `bias` of a single module's
    state_dict, a model's own `cls_token`) are one group named `""`, which
    `rename={"layer": ""}` gives to a layer.
    """
    by_module = {}
    for key, array in arrays.items():
        module, _, _ = key.rpartition(".")
        by_module.setdefault(module, []).append(array)
    return [_matching.Group(name, members, layout="torch")
            for name, members in by_module.items()]


def _array(key, shape, dtype, read, origin=None):
    module, _, param = key.rpartition(".")
    return _matching.Array(module, key, tuple(shape), np.dtype(dtype), read, relative=param,
                           origin=origin)


def safetensors_arrays(files, where):
    """`{key: Array}` of open safetensors files, `[(file, path), ...]`; each
    header checked before anything is read.

    Raises:
        WeightFileError: a header lies (see `_safetensors`), or two files
            hold a tensor of the same name.
    """
    arrays = {}
    for f, path in files:
        for tensor in _safetensors.read_header(f, path):
            if tensor.name in arrays:
                raise errors.WeightFileError(
                    f"{where}: tensor '{tensor.name}' is in two shards; refusing the "
                    "checkpoint.")
            arrays[tensor.name] = _array(
                tensor.name, tensor.shape, tensor.dtype,
                lambda f=f, t=tensor, p=path: _safetensors.read_tensor(f, t, p), origin=path)
    return arrays


def torch_file_arrays(f, path):
    """`{key: Array}` of a `.pt`/`.pth`/`.bin` file open as `f`, through
    `torch.load(weights_only=True)`.

    Raises:
        MissingDependencyError: torch is not installed.
        WeightFileError: the file is not a readable PyTorch checkpoint of
            tensors.
        UnsafeSourceError: the file holds objects PyTorch's safe loader
            refuses (a pickled callable); nothing in it was run.
    """
    try:
        import torch  # noqa: PLC0415 (optional: imported only for these files)
    except ImportError as e:
        raise errors.MissingDependencyError(
            f"{path} is a PyTorch checkpoint, which only PyTorch's own safe loader "
            "(torch.load(weights_only=True)) reads, and torch is not installed. "
            "Install it (pip install 'keras_transfer[torch]'), or convert the file to "
            "safetensors, which loads without torch.") from e
    f.seek(0)
    try:
        loaded = torch.load(f, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        raise errors.UnsafeSourceError(
            f"{path}: PyTorch's safe loader (torch.load(weights_only=True)) refused it: "
            "it holds objects other than tensors and plain containers (a pickled "
            "callable can run code when unpickled). Nothing in it was run or loaded. "
            f"If you trust it, load it with torch yourself and pass the state_dict to "
            f"transfer_weights(..., layout='torch'). PyTorch said: {str(e)[:300]}") from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise errors.WeightFileError(
            f"{path} could not be read as a PyTorch checkpoint ({type(e).__name__}: "
            f"{str(e)[:300]}). If it is damaged, fetch it again.") from e
    return dict_arrays(state_dict_of(loaded, path), path)


def state_dict_of(loaded, where):
    """The state_dict in what `torch.load` returned: the dict itself, or the
    one under a training checkpoint's `state_dict` / `model` key.

    Raises:
        WeightFileError: no dict of tensors is there.
    """
    if _is_state_dict(loaded):
        return loaded
    if isinstance(loaded, dict):
        for key in _WRAPPERS:
            if _is_state_dict(loaded.get(key)):
                return loaded[key]
    described = (f"a dict with keys {sorted(map(str, loaded))[:10]}"
                 if isinstance(loaded, dict) else type(loaded).__name__)
    raise errors.WeightFileError(
        f"{where}: expected a state_dict (a dict of tensors, as model.state_dict() "
        f"returns), or a checkpoint holding one under {list(_WRAPPERS)}; found "
        f"{described}.")


def _is_state_dict(value):
    return (isinstance(value, dict) and bool(value)
            and all(isinstance(k, str) and _is_tensor(v) for k, v in value.items()))


def _is_tensor(value):
    return isinstance(value, np.ndarray) or (
        hasattr(value, "detach") and hasattr(value, "shape") and hasattr(value, "dtype"))


def dict_arrays(state_dict, where):
    """`{key: Array}` of a dict of numpy arrays or torch tensors.

    Raises:
        ArgumentTypeError: a key is not a string, or a value is neither.
    """
    arrays = {}
    for key, value in state_dict.items():
        if not isinstance(key, str) or not _is_tensor(value):
            raise errors.ArgumentTypeError(
                f"{where}: a state_dict maps names to arrays or torch tensors; "
                f"'{key}' holds {type(value).__name__}.")
        array = _numpy(value)
        arrays[key] = _array(key, array.shape, array.dtype, lambda a=array: a)
    return arrays


def _numpy(value):
    """A numpy view of an array or a CPU torch tensor (bfloat16 kept as
    ml_dtypes' bfloat16, which numpy lacks)."""
    if isinstance(value, np.ndarray):
        return value
    tensor = value.detach().cpu()
    if str(tensor.dtype) == "torch.bfloat16":
        import torch  # noqa: PLC0415 (a torch tensor was given: torch is there)

        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()
