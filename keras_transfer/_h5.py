"""Private: the legacy by-name HDF5 layout, written and read safely.

Layout (Keras 2 / tf_keras `save_weights("x.h5")`, which Keras 3 still reads
with `load_weights(path, by_name=True)`):

- root attributes `layer_names`, `backend`, `keras_version` (under a
  `model_weights` group in a whole-model file from `model.save("x.h5")`);
- one group per layer, with a `weight_names` attribute and one dataset per
  weight, in Keras' saved order (trainable first);
- `top_level_model_weights`: the weights a model holds itself;
- name lists longer than an HDF5 object header holds are split into
  attributes `layer_names0`, `layer_names1`, ... as Keras does.

Files written here also hold, for each nested model, a group of its name whose
datasets are hard links to its layers' datasets (no copy), so that Keras'
loader, which looks only at top-level layers, fills a nested base model too.
Such groups carry the attribute `keras_transfer_container`; datasets of their
own there are the nested model's own weights.

Reading never leaves the file: a file holding an external link (reached
directly or through a soft link) is refused, and so is a dataset with
external storage or a virtual layout, as Keras'
`saving_lib.safe_get_h5_dataset` does. Every h5py error while reading becomes a
`WeightFileError` naming the file and what was being read; nothing else is
caught, so a bug in this package surfaces as itself.
"""

import contextlib
import functools
import os
import re

import h5py
import keras
import numpy as np

from keras_transfer import _layers
from keras_transfer import _matching
from keras_transfer import errors

CONTAINER_ATTR = "keras_transfer_container"
HEADER_LIMIT = 64512  # bytes an attribute may take; Keras' HDF5_OBJECT_HEADER_LIMIT
SIGNATURE = b"\x89HDF\r\n\x1a\n"  # the format signature, at the superblock's start

# h5py reports damaged or hostile files with these; they are caught only
# around h5py calls.
_H5PY_ERRORS = (OSError, KeyError, RuntimeError, ValueError, TypeError)


@contextlib.contextmanager
def reading(path, what):
    """Turns h5py's errors while reading `what` into a `WeightFileError`."""
    try:
        yield
    except errors.TransferError:
        raise
    except _H5PY_ERRORS as e:
        raise errors.WeightFileError(
            f"{path}: cannot read {what} ({type(e).__name__}: {e}). The file "
            "is damaged or is not a weights file.") from e


def write_model(f, model):
    """Writes `model`'s weights into the open file `f` (see the layout)."""
    dataset_of = {}  # id(variable) -> dataset, for the nested models' hard links
    layer_names = []
    for layer in _layers.units(model):
        group = f.create_group(layer.name)
        names = []
        for variable, value in _layers.checkpoint_arrays(layer):  # LoRA merged
            name = f"{layer.name}/{_layers.relative_name(layer, variable)}"
            dataset_of[id(variable)] = group.create_dataset(name, data=value())
            names.append(name)
        write_names(group, "weight_names", names)
        layer_names.append(layer.name)
    nested = _layers.containers(model)[1:]
    for container in reversed(nested):  # inner models first: outer ones link to them
        if not container.weights:
            continue
        if container.name in f:
            raise errors.DuplicateLayerNameError(
                f"Nested model '{container.name}' has the same name as a layer "
                f"of model '{model.name}'. Give each a unique `name=`.")
        group = f.create_group(container.name)
        group.attrs[CONTAINER_ATTR] = True
        names = []
        for variable, value in _layers.checkpoint_arrays(container):
            if id(variable) in dataset_of:
                source = dataset_of[id(variable)]
                name = source.name.split("/", 2)[2]  # drop "/<its group>/"
                group[name] = source  # an HDF5 hard link, not a copy
            else:  # the nested model's own weight
                name = f"{container.name}/{_layers.relative_name(container, variable)}"
                dataset_of[id(variable)] = group.create_dataset(name, data=value())
            names.append(name)
        write_names(group, "weight_names", names)
    layer_names.extend(c.name for c in nested if c.weights)
    own = _layers.own_weights(model)
    if own:  # Keras' name and place for them, outside `layer_names`
        group = f.create_group(_matching.TOP_GROUP)
        names = [f"{model.name}/{_layers.relative_name(model, v)}" for v in own]
        for name, variable in zip(names, own):
            group.create_dataset(name, data=keras.ops.convert_to_numpy(variable))
        write_names(group, "weight_names", names)
    write_names(f, "layer_names", layer_names)
    f.attrs["backend"] = keras.backend.backend().encode("utf8")
    f.attrs["keras_version"] = keras.__version__.encode("utf8")


def write_names(obj, name, values):
    """Writes a list of strings as an attribute, split in chunks as Keras does
    when it is longer than an HDF5 object header holds."""
    data = np.array([v.encode("utf8") for v in values])
    too_long = [v[:80] + "..." for v in values if len(v.encode("utf8")) > HEADER_LIMIT]
    if too_long:
        raise errors.WeightFileError(
            f"Names longer than {HEADER_LIMIT} bytes cannot be stored in an "
            f"HDF5 weights file: {too_long}. Give the layer a shorter `name=`.")
    chunks = 1
    while any(part.nbytes > HEADER_LIMIT for part in np.array_split(data, chunks)):
        chunks += 1
    if chunks == 1:
        obj.attrs[name] = data
        return
    for i, part in enumerate(np.array_split(data, chunks)):
        obj.attrs[f"{name}{i}"] = part


def read_names(obj, name):
    """Reads a (possibly chunked) list-of-strings attribute."""
    if name in obj.attrs:
        values = list(np.atleast_1d(obj.attrs[name]))
    else:
        values, i = [], 0
        while f"{name}{i}" in obj.attrs:
            values.extend(np.atleast_1d(obj.attrs[f"{name}{i}"]))
            i += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def is_hdf5(f):
    """True if the binary file `f` (open) has an HDF5 signature where the
    format puts one: at byte 0, or after a user block of 512 bytes times a
    power of two, as the HDF5 library looks for it."""
    size = os.fstat(f.fileno()).st_size
    at = 0
    while at + len(SIGNATURE) <= size:
        f.seek(at)
        if f.read(len(SIGNATURE)) == SIGNATURE:
            return True
        at = at * 2 or 512
    return False


def read_groups(f, path):
    """The by-name layout in the open file `f` as `_matching.Group`s.

    Every listed dataset is checked (inside the file, numbers) before any is
    read; the arrays are read later, by `Array.read`.

    Raises:
        WeightFileError: the file is not in the by-name layout, or a listed
            dataset is missing, outside the file, or not numbers.
    """
    _refuse_links_out(f, path)
    with reading(path, "the list of layers"):
        root = f
        if "layer_names" not in f.attrs and "model_weights" in f:  # model.save("x.h5")
            root = _get(f, "model_weights", path, h5py.Group)
        layer_names = read_names(root, "layer_names")
        native = "vars" in root or "layers" in root
    if not layer_names:
        if native:
            raise errors.WeightFileError(
                f"{path} is a native Keras 3 `.weights.h5` file: it stores "
                "layers under automatic names (`layers/dense_1`), not yours, so "
                "nothing in it can be matched by name. Build the architecture "
                "that wrote it, call model.load_weights(path), then "
                "keras_transfer.transfer_weights(model, target) or "
                "save_weights_by_name(model, 'x.h5') for a by-name file.")
        raise errors.WeightFileError(
            f"{path} is HDF5 but has no `layer_names` attribute: it is not a "
            "by-name weights file (Keras 2 / tf_keras save_weights('x.h5'), "
            "or save_weights_by_name).")
    groups, containers, seen = [], [], set()
    for name in dict.fromkeys(layer_names):
        group = _get(root, name, path, h5py.Group)
        with reading(path, f"layer '{name}'"):
            container = bool(group.attrs.get(CONTAINER_ATTR, False))
        arrays = _read_arrays(group, name, path)
        if container:
            containers.append((name, arrays))
            continue
        seen.update(a.identity for a in arrays)
        groups.append(_matching.Group(name, arrays))
    for name, arrays in containers:  # only what is not a link to a layer's array
        groups.append(_matching.Group(
            name, [a for a in arrays if a.identity not in seen]))
    with reading(path, "the model's own weights"):
        has_top = _matching.TOP_GROUP in root
    if has_top:
        group = _get(root, _matching.TOP_GROUP, path, h5py.Group)
        arrays = _read_arrays(group, _matching.TOP_GROUP, path)
        heads = {a.name.split("/")[0] for a in arrays if "/" in a.name}
        alias = heads.pop() if len(heads) == 1 else None
        groups.append(_matching.Group(_matching.TOP_GROUP, arrays, alias=alias))
    return groups


def _read_arrays(group, group_name, path):
    with reading(path, f"the weight names of layer '{group_name}'"):
        names = read_names(group, "weight_names")
    arrays = []
    for name in names:
        dataset = _get(group, name, path, h5py.Dataset, group_name)
        with reading(path, f"array '{name}' of layer '{group_name}'"):
            shape, dtype = tuple(dataset.shape), dataset.dtype
        if not (np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)):
            raise errors.WeightFileError(
                f"{path}: layer '{group_name}': '{name}' holds {dtype} data; "
                "expected numbers.")
        arrays.append(_matching.Array(
            group_name, re.sub(r":\d+$", "", name), shape, dtype,
            functools.partial(_read, dataset, path, name), identity=dataset.id))
    return arrays


def _read(dataset, path, name):
    with reading(path, f"array '{name}'"):
        return np.asarray(dataset[()])


def _refuse_links_out(f, path):
    """Refuses a file holding any link to another file.

    One pass over every link of the file (HDF5's H5Lvisit, which follows no
    link): with no external link anywhere, no path can leave the file, since
    a soft link names a path inside its own file.
    """
    outside = []

    def visit(name, info):
        if info.type != h5py.h5l.TYPE_HARD and info.type != h5py.h5l.TYPE_SOFT:
            outside.append(name.decode("utf8", "replace"))

    with reading(path, "the file's links"):
        f.id.links.visit(visit, info=True)
    if outside:
        with reading(path, f"link '{outside[0]}'"):
            link = f.get(outside[0], getlink=True)
        target = (f" to {link.filename}:{link.path}"
                  if isinstance(link, h5py.ExternalLink) else "")
        raise errors.WeightFileError(
            f"{path}: '{outside[0]}' is an external link{target}. The loader "
            "reads nothing outside the file; refusing it.")


def _get(parent, name, path, kind, layer=None):
    """`parent[name]`, a `kind`, whose data is stored in the file itself.

    Links to other files were refused by `_refuse_links_out`; here a name
    must be plain (no absolute path, `.` or `..`), and a dataset must not
    keep its data in other files (external storage) or map it from them (a
    virtual dataset), as Keras' `saving_lib.safe_get_h5_dataset` checks.
    """
    where = f"'{name}'" + (f" (layer '{layer}')" if layer else "")
    if any(p in ("", ".", "..") for p in name.split("/")):
        raise errors.WeightFileError(
            f"{path}: {where} is not a plain name inside the file.")
    with reading(path, where):
        if name not in parent:
            raise errors.WeightFileError(f"{path}: {where} is listed but not in the file.")
        obj = parent[name]
        if not isinstance(obj, kind):
            raise errors.WeightFileError(
                f"{path}: {where} is a {type(obj).__name__}, expected a "
                f"{kind.__name__}.")
        if kind is h5py.Dataset:
            if obj.external:
                raise errors.WeightFileError(
                    f"{path}: dataset {where} keeps its data in other files "
                    f"({[e[0] for e in obj.external]}). The loader reads nothing "
                    "outside the file; refusing it.")
            if obj.is_virtual:
                raise errors.WeightFileError(
                    f"{path}: dataset {where} is a virtual dataset (its data "
                    "may come from other files). The loader reads nothing "
                    "outside the file; refusing it.")
    return obj
