"""Save and load Keras 3 weights by layer name.

Keras 3 writes `.weights.h5` files keyed by automatic paths (`layers/conv2d`),
so a target model with other layers cannot take weights from them by name, and
`model.load_weights(path, by_name=True)` reads only legacy Keras-2 files. This
module writes that legacy by-name layout from Keras 3 and reads it (and files
written by Keras 2 / tf_keras) back into any model that shares layer names.

File layout (the legacy Keras by-name HDF5 layout, readable by Keras 3's own
`model.load_weights(path, by_name=True)` and by tf_keras):

- root attributes `layer_names`, `backend`, `keras_version`;
- one group per layer that holds weights, named after the layer, with a
  `weight_names` attribute (`"Conv1/kernel"`, ...) and one dataset per weight,
  in Keras' legacy order (trainable weights first); BatchNormalization moving
  statistics included;
- for each nested model, a group of its own name whose datasets are HDF5 hard
  links to its layers' datasets (no copy), so that Keras' loader, which only
  looks at top-level layers, also fills a nested base model. Such groups carry
  the attribute `keras_transfer_container`.
"""

import dataclasses
import difflib
import os
import re
import zipfile

import h5py
import keras
import numpy as np

from keras_transfer import _files
from keras_transfer import _layers
from keras_transfer import errors

_CONTAINER_ATTR = "keras_transfer_container"
_HDF5_ATTR_LIMIT = 64000  # bytes; HDF5 object headers hold at most 64 KiB


def save_weights_by_name(model, path):
    """Saves `model`'s weights to an HDF5 file keyed by layer name.

    The write is atomic: the file is written beside `path` under a temporary
    name and moved into place only when complete, so a failure never leaves a
    truncated file where a good one was.

    Args:
        model: a built `keras.Model`. Layers inside nested models are saved
            under their own names.
        path: where to write, conventionally ending in `.h5`.

    Returns:
        The path written, as a string.

    Raises:
        DuplicateLayerNameError: two layers holding weights share a name.
        ValueError: the model is not built (it has no weights yet).

    Example:

    ```python
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="Dense1")])
    keras_transfer.save_weights_by_name(model, "source.h5")
    ```
    """
    path = os.fspath(path)
    if not model.weights:
        raise ValueError(
            f"Model '{model.name}' has no weights to save: build it first "
            "(give it an `Input` or call it on data)."
        )
    units = _layers.units(model)
    with _files.atomic_write(path) as tmp:
        with h5py.File(tmp, "w") as f:
            _write_file(f, model, units)
    return path


def _write_file(f, model, units):
    dataset_of = {}  # id(variable) -> dataset path, for container hard links
    layer_names = []
    for layer in units:
        group = f.create_group(layer.name)
        names = []
        for variable in _layers.legacy_order(layer):
            name = f"{layer.name}/{_layers.relative_name(layer, variable)}"
            dataset = group.create_dataset(
                name, data=keras.ops.convert_to_numpy(variable)
            )
            dataset_of[id(variable)] = dataset.name
            names.append(name)
        _write_attr(group, "weight_names", names)
        layer_names.append(layer.name)
    for layer, _ in _layers.walk(model):
        if not _layers.is_container(layer) or not layer.weights:
            continue
        if layer.name in f:
            raise errors.DuplicateLayerNameError(
                f"Nested model '{layer.name}' has the same name as a layer of "
                f"model '{model.name}'. Give each a unique `name=`."
            )
        group = f.create_group(layer.name)
        group.attrs[_CONTAINER_ATTR] = True
        names = []
        for variable in _layers.legacy_order(layer):
            source = f[dataset_of[id(variable)]]
            name = source.name.split("/", 2)[2]  # drop "/<unit group>/"
            group[name] = source  # an HDF5 hard link, not a copy
            names.append(name)
        _write_attr(group, "weight_names", names)
        layer_names.append(layer.name)
    _write_attr(f, "layer_names", layer_names)
    f.attrs["backend"] = keras.backend.backend().encode("utf8")
    f.attrs["keras_version"] = keras.__version__.encode("utf8")


def _write_attr(obj, name, values):
    """Writes a list of strings as an attribute, chunked as Keras does."""
    data = np.array([v.encode("utf8") for v in values])
    chunks = 1
    while data.nbytes / chunks > _HDF5_ATTR_LIMIT:
        chunks += 1
    if chunks == 1:
        obj.attrs[name] = data
        return
    for i, part in enumerate(np.array_split(data, chunks)):
        obj.attrs[f"{name}{i}"] = part


def _read_attr(obj, name):
    """Reads a (possibly chunked) list-of-strings attribute."""
    if name in obj.attrs:
        values = list(obj.attrs[name])
    else:
        values, i = [], 0
        while f"{name}{i}" in obj.attrs:
            values.extend(obj.attrs[f"{name}{i}"])
            i += 1
    return [v.decode("utf8") if hasattr(v, "decode") else str(v) for v in values]


@dataclasses.dataclass(frozen=True)
class TransferReport:
    """What a by-name load did, as data and as a table (`str(report)`).

    Attributes:
        path: the file that was read.
        loaded: target layer name -> the source layer name it loaded from.
        skipped: target layer name -> why it was not loaded (shape mismatch
            under `skip_mismatch=True`).
        missing: target layers holding weights that the file does not have;
            they keep their fresh initial values (a new head, typically).
        unused: layers in the file that no target layer loaded from.
        adapted: target layer name -> how its kernel was adapted
            (`adapt_input_channels`).
    """

    path: str
    loaded: dict
    skipped: dict
    missing: tuple
    unused: tuple
    adapted: dict = dataclasses.field(default_factory=dict)

    def __str__(self):
        rows = [(t, s, "loaded", self.adapted.get(t, "")) for t, s in self.loaded.items()]
        rows += [(t, "", "skipped", why) for t, why in self.skipped.items()]
        rows += [(t, "", "missing", "not in file; keeps its initial value")
                 for t in self.missing]
        header = ("layer", "from", "status", "detail")
        widths = [max(len(r[i]) for r in rows + [header]) for i in range(3)]
        lines = [
            f"Transfer report for {self.path}: {len(self.loaded)} loaded, "
            f"{len(self.skipped)} skipped, {len(self.missing)} missing, "
            f"{len(self.unused)} unused in file"
        ]
        for row in [header] + rows:
            cells = [c.ljust(w) for c, w in zip(row[:3], widths)] + [row[3]]
            lines.append("  " + "  ".join(cells).rstrip())
        if self.unused:
            lines.append("  unused in file: " + ", ".join(self.unused))
        return "\n".join(lines)


@dataclasses.dataclass
class _Entry:
    group: str
    name: str  # weight name without the ":0" suffix
    dataset: h5py.Dataset
    used: bool = False


def load_weights_by_name(
    model, path, *, skip_mismatch=False, rename=None, require=None, sha256=None,
    adapt_input_channels=None,
):
    """Loads weights into the layers of `model` whose names are in `path`.

    Reads files written by `save_weights_by_name` and legacy by-name files
    written by Keras 2 / tf_keras `model.save_weights("x.h5")` or
    `model.save("x.h5")`. Layers are matched by name, inside nested models too;
    within a layer each array is matched to its variable by name (`kernel`,
    `bias`, `moving_mean`, ...), never by position, so a partly frozen layer
    cannot receive values in the wrong variables. A layer loads whole or not at
    all, and nothing is assigned unless every check passes.

    Args:
        model: a built `keras.Model` (the target).
        path: the weights file.
        skip_mismatch: if True, layers whose shapes do not match are skipped
            and reported instead of raising.
        rename: maps target layer names to source layer names: a dict (names
            not in it map to themselves) or a callable returning the source
            name (or None for the same name). E.g. `{"Dense1_1": "Dense1"}`.
        require: target layer names that must load, or a regular expression
            (str or compiled) that every required layer name fully matches.
        sha256: if given, the file's expected sha256 hex digest; a file that
            does not match is refused before it is read.
        adapt_input_channels: a layer name (or list of names) whose kernel may
            differ from the file's in its input-channel axis (the second to
            last), e.g. a first convolution trained on RGB loaded into a
            grayscale model; the kernel is adapted with `adapt_input_conv`.
            True means the target's first Conv layer.

    Returns:
        A `TransferReport`.

    Raises:
        WeightFileError: the file is missing, not HDF5, or in another layout
            (a `.keras` archive, a native `.weights.h5`); the message says what
            would load it.
        ChecksumError: `sha256` was given and the file does not match.
        ShapeMismatchError: a matched array has the wrong shape (unless
            `skip_mismatch`), or a layer's arrays are only partly in the file.
        NoLayersMatchedError: no layer at all was loaded.
        MissingWeightsError: a layer named by `require` was not loaded.

    Example:

    ```python
    report = keras_transfer.load_weights_by_name(
        target, "weights/fashion_mnist.h5", rename={"Dense1_1": "Dense1"})
    print(report)
    ```
    """
    path = os.fspath(path)
    _check_file(path, sha256)
    source_of = _rename_function(rename)
    try:
        with h5py.File(path, "r") as f:
            return _load(f, model, path, skip_mismatch, source_of, require,
                         _adapt_set(model, adapt_input_channels))
    except errors.TransferError:
        raise
    except Exception as e:  # h5py reports corruption as OSError, KeyError, ...
        raise errors.WeightFileError(
            f"{path} could not be read as a by-name weights file "
            f"({type(e).__name__}: {e}).") from e



def _adapt_set(model, adapt):
    if adapt is None or adapt is False:
        return set()
    if adapt is True:
        for layer in _layers.units(model):
            if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
                return {layer.name}
        raise errors.LayerSelectionError(
            f"adapt_input_channels=True, but model '{model.name}' has no Conv layer.")
    return {adapt} if isinstance(adapt, str) else set(adapt)


def adapt_input_conv(kernel, in_channels):
    """Adapts a conv kernel `(..., in, out)` to `in_channels` input channels.

    As timm's `adapt_input_conv`: to one channel, the kernel is summed over its
    input channels (a grayscale image seen as equal R, G, B gives the same
    response); to more channels, it is repeated along the input axis, cut to
    `in_channels` and scaled by `in / in_channels` so activations keep their
    scale.

    Args:
        kernel: a numpy array whose second-to-last axis is input channels.
        in_channels: the wanted number of input channels.

    Returns:
        The adapted kernel, same dtype.
    """
    source = kernel.shape[-2]
    if in_channels == source:
        return kernel
    if in_channels == 1:
        return kernel.sum(axis=-2, keepdims=True).astype(kernel.dtype)
    reps = [1] * kernel.ndim
    reps[-2] = -(-in_channels // source)
    tiled = np.tile(kernel, reps)[..., :in_channels, :]
    return (tiled * (source / in_channels)).astype(kernel.dtype)


def _load(f, model, path, skip_mismatch, source_of, require, adapt):
    root = f
    if "layer_names" not in f.attrs and "model_weights" in f:
        root = f["model_weights"]
    entries = _read_entries(root, path)
    by_suffix = {}
    for entry in entries:
        parts = entry.name.split("/")
        for i in range(len(parts) - 1):
            by_suffix.setdefault("/".join(parts[i:]), []).append(entry)

    plans, loaded, skipped, missing, adapted = [], {}, {}, [], {}
    for layer in _layers.units(model):
        source = source_of(layer.name)
        found, absent = [], []
        for variable in _layers.legacy_order(layer):
            key = f"{source}/{_layers.relative_name(layer, variable)}"
            entry = _pick(by_suffix.get(key, []), source, key, path)
            (found if entry else absent).append((variable, key, entry))
        if not found:
            missing.append(layer.name)
            continue
        problem = None
        if absent:
            problem = (
                f"the file has {', '.join(k for _, k, _ in found)} but "
                f"not {', '.join(k for _, k, _ in absent)}"
            )
        else:
            for variable, key, entry in found:
                have, want = tuple(entry.dataset.shape), tuple(variable.shape)
                if (layer.name in adapt and len(want) >= 3 and key.endswith("/kernel")
                        and have[:-2] == want[:-2] and have[-1] == want[-1]):
                    adapted[layer.name] = f"input channels {have[-2]} -> {want[-2]}"
                    continue
                if have != want:
                    problem = (
                        f"{key}: the model expects shape "
                        f"{tuple(variable.shape)}, the file has "
                        f"{tuple(entry.dataset.shape)}"
                    )
                    break
        if problem:
            if not skip_mismatch:
                raise errors.ShapeMismatchError(
                    f"Cannot load layer '{layer.name}' from '{source}' in "
                    f"{path}: {problem}. Pass skip_mismatch=True to skip "
                    "it, or rename=... to take it from another layer."
                )
            skipped[layer.name] = problem
            continue
        for _, _, entry in found:
            entry.used = True
        plans.append((layer, source, found))
        loaded[layer.name] = source

    groups = list(dict.fromkeys(e.group for e in entries))
    used_groups = {e.group for e in entries if e.used}
    unused = tuple(g for g in groups if g not in used_groups)
    if not plans:
        raise errors.NoLayersMatchedError(_zero_match_message(
            model, path, groups, skipped, source_of))
    _check_required(model, require, loaded, skipped, path)
    # Read every array before assigning any, so a damaged file changes nothing.
    values = [(variable, _read_array(entry, variable, key, path))
              for _, _, found in plans for variable, key, entry in found]
    values = [(v, adapt_input_conv(a, v.shape[-2]) if a.shape != tuple(v.shape) else a)
              for v, a in values]
    for variable, value in values:
        variable.assign(value)
    return TransferReport(
        path=path, loaded=loaded, skipped=skipped, missing=tuple(missing),
        unused=unused, adapted=adapted,
    )


def _check_file(path, sha256):
    if not os.path.isfile(path):
        raise errors.WeightFileError(
            f"No weights file at {path!r}: expected an HDF5 file written by "
            "save_weights_by_name or Keras 2's save_weights('x.h5')."
        )
    if sha256 is not None:
        actual = _files.sha256_of(path)
        if actual != sha256.lower():
            raise errors.ChecksumError(
                f"{path} has sha256 {actual}, expected {sha256}: the file is "
                "not the one that was published. Fetch it again."
            )
    if zipfile.is_zipfile(path):
        raise errors.WeightFileError(
            f"{path} is a `.keras` zip archive, not a by-name weights file. "
            "Load it with keras.saving.load_model(path), or into the same "
            "architecture with model.load_weights(path)."
        )
    if not h5py.is_hdf5(path):
        raise errors.WeightFileError(
            f"{path} is not an HDF5 file (empty, truncated or another format); "
            "expected a by-name weights file from save_weights_by_name."
        )


def _read_entries(root, path):
    layer_names = _read_attr(root, "layer_names")
    if not layer_names:
        if "vars" in root or "layers" in root:
            raise errors.WeightFileError(
                f"{path} is a native Keras 3 `.weights.h5` file: it stores "
                "layers under automatic names, not yours. Load it with "
                "model.load_weights(path) into the same architecture, then "
                "save_weights_by_name(model, ...) to transfer by name."
            )
        raise errors.WeightFileError(
            f"{path} is HDF5 but has no `layer_names` attribute: it is not "
            "a by-name weights file."
        )
    entries = []
    for group_name in layer_names:
        if group_name not in root:
            raise errors.WeightFileError(
                f"{path} lists layer '{group_name}' but has no group for it."
            )
        group = root[group_name]
        if group.attrs.get(_CONTAINER_ATTR, False):
            continue  # hard links to its layers' groups, read there
        for name in _read_attr(group, "weight_names"):
            dataset = group.get(name)
            if not isinstance(dataset, h5py.Dataset):
                raise errors.WeightFileError(
                    f"{path}: layer '{group_name}' lists weight '{name}' "
                    "but has no array for it."
                )
            entries.append(_Entry(group_name, re.sub(r":\d+$", "", name),
                                  dataset))
    return entries


def _pick(candidates, source, key, path):
    if len(candidates) > 1:
        own = [c for c in candidates if c.group == source]
        if len(own) == 1:
            return own[0]
        raise errors.WeightFileError(
            f"{path} holds several arrays named '{key}' (in layers "
            f"{sorted({c.group for c in candidates})}); cannot tell which to "
            "load. Use rename= to name the source layer."
        )
    return candidates[0] if candidates else None


def _read_array(entry, variable, key, path):
    try:
        value = entry.dataset[()]
    except Exception as e:
        raise errors.WeightFileError(f"{path}: cannot read '{key}': {e}") from e
    if not (np.issubdtype(value.dtype, np.number)
            or np.issubdtype(value.dtype, np.bool_)):
        raise errors.WeightFileError(
            f"{path}: '{key}' holds {value.dtype} data; expected numbers of "
            f"dtype {variable.dtype}."
        )
    return value.astype(variable.dtype, copy=False)


def _rename_function(rename):
    if rename is None:
        return lambda name: name
    if callable(rename):
        return lambda name: rename(name) or name
    if isinstance(rename, dict):
        return lambda name: rename.get(name, name)
    raise TypeError(
        f"rename must be a dict or a callable, received {type(rename).__name__}."
    )


def _zero_match_message(model, path, groups, skipped, source_of):
    names = [layer.name for layer in _layers.units(model)]
    lines = [
        f"No layer of model '{model.name}' was loaded from {path}.",
    ]
    if skipped:
        lines.append(f"Every match was skipped: {skipped}.")
    lowered = {g.lower(): g for g in groups}
    for name in names:
        close = [lowered[c] for c in difflib.get_close_matches(
            source_of(name).lower(), list(lowered), n=3)]
        if close:
            lines.append(f"  '{name}' is not in the file; close: {close}")
    lines.append(f"The file holds: {groups[:20]}"
                 + (" ..." if len(groups) > 20 else ""))
    lines.append("Name the layers alike or pass rename={target: source}.")
    return "\n".join(lines)


def _check_required(model, require, loaded, skipped, path):
    if require is None:
        return
    names = [layer.name for layer in _layers.units(model)]
    if isinstance(require, (str, re.Pattern)):
        pattern = re.compile(require)
        wanted = [n for n in names if pattern.fullmatch(n)]
        if not wanted:
            raise errors.MissingWeightsError(
                f"require={pattern.pattern!r} matches no layer with weights "
                f"in model '{model.name}' (layers: {names})."
            )
    else:
        wanted = list(require)
    absent = [n for n in wanted if n not in loaded]
    if absent:
        why = {n: skipped.get(n, "not in file" if n in names
                              else "no such layer in the model")
               for n in absent}
        raise errors.MissingWeightsError(
            f"Required layers were not loaded from {path}: {why}."
        )


MANIFEST_NAME = "MANIFEST.json"


def manifest_entry(path):
    """The entry for `path` in the `MANIFEST.json` beside it, or None.

    A manifest maps file names to what is known of them: at least `sha256`,
    and for shipped weights the command, seed and accuracy that produced them.
    Pass `sha256=manifest_entry(path)["sha256"]` to `load_weights_by_name` to
    refuse a file that is not the one recorded.
    """
    import json

    manifest = os.path.join(os.path.dirname(os.path.abspath(path)), MANIFEST_NAME)
    if not os.path.isfile(manifest):
        return None
    with open(manifest) as f:
        try:
            entries = json.load(f)
        except ValueError as e:
            raise errors.WeightFileError(f"{manifest} is not valid JSON: {e}") from e
    return entries.get(os.path.basename(path))


def record_in_manifest(path, **info):
    """Records `path`'s sha256 and `info` in the `MANIFEST.json` beside it."""
    import json

    manifest = os.path.join(os.path.dirname(os.path.abspath(path)), MANIFEST_NAME)
    entries = {}
    if os.path.isfile(manifest):
        with open(manifest) as f:
            entries = json.load(f)
    entries[os.path.basename(path)] = {"sha256": _files.sha256_of(path), **info}
    _files.write_json(entries, manifest)
    return entries[os.path.basename(path)]
