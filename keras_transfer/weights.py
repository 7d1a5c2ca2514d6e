"""Save and load Keras 3 weights by layer name; move weights between models.

Keras 3 writes `.weights.h5` files keyed by automatic paths (`layers/conv2d`),
so a target model with other layers cannot take weights from them by name, and
`model.load_weights(path, by_name=True)` reads only legacy Keras 2 files. This
module writes that legacy by-name layout from Keras 3 (see `_h5` for the
layout) and loads by name from it, from files written by Keras 2 / tf_keras
(the layout of the official keras.applications weights), from `.keras`
archives, from KerasHub presets (`_keras_hub`), from PyTorch checkpoints
(`_state_dict`, `_safetensors`, converted by `_torch_layout`) and from models
in memory. `_matching` decides which array goes where.
"""

import collections.abc
import contextlib
import dataclasses
import difflib
import json
import os
import re
import shutil
import tempfile
import warnings
import zipfile
import zlib

import h5py
import keras
import numpy as np

from keras_transfer import _files
from keras_transfer import _h5
from keras_transfer import _keras_hub
from keras_transfer import _layers
from keras_transfer import _matching
from keras_transfer import _safetensors
from keras_transfer import _state_dict
from keras_transfer import _torch_layout
from keras_transfer import errors

_NOT_PUBLISHED = "the file is not the one that was published. Fetch it again."


def save_weights_by_name(model, path):
    """Saves `model`'s weights to an HDF5 file keyed by layer name.

    The file is in the legacy Keras by-name layout, which Keras 3's
    `model.load_weights(path, by_name=True)` and tf_keras read too. The write
    is atomic: the file is written beside `path` under a temporary name and
    moved into place only when complete, so a failure never leaves a truncated
    file where a good one was.

    Args:
        model: a built `keras.Model`. Layers inside nested models are saved
            under their own names; weights a model holds itself (a class
            token) are saved too.
        path: where to write, conventionally ending in `.h5`.

    Returns:
        The path written, as a string.

    Raises:
        DuplicateLayerNameError: two layers holding weights share a name.
        UnbuiltModelError: the model is not built (it has no weights yet).
        ArgumentTypeError: `model` is not a Keras 3 model.

    Example:

    ```python
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="Dense1")])
    keras_transfer.save_weights_by_name(model, "small.h5")   # 'small.h5'
    ```
    """
    path = os.fspath(path)
    _layers.check_model(model, "model")
    with _files.atomic_write(path) as tmp:
        with h5py.File(tmp, "w") as f:
            _h5.write_model(f, model)
    return path


@dataclasses.dataclass(frozen=True)
class TransferReport:
    """What a by-name load did, as data and as a table (`str(report)`).

    Attributes:
        path: the source that was read (a file, or "model '<name>'").
        loaded: target layer name -> the source layer it loaded from
            (`base/Dense_a` for a layer found inside a nested model's group).
        skipped: target layer name -> why it was not loaded (under
            `skip_mismatch=True`).
        missing: target layers holding weights that the source does not have;
            they keep their fresh initial values (a new head, typically).
        unused: source layers that no target layer loaded from
            (`group/layer` for part of a nested model's group).
        adapted: target layer name -> how its kernel was adapted
            (`adapt_input_channels`).
        how: target layer name -> how it was matched: "by name" (layer and
            array names agree), "by order" (arrays in Keras' saved order, every
            shape checked, because their names differ), prefixed by
            "renamed" (`rename=`), "normalized" (a Keras 2 name such as
            `conv1/conv` for `conv1_conv`) or "in '<group>'" (inside a nested
            model's group).
        cast: target layer name -> a dtype narrowing done while loading,
            e.g. "float64 -> float16".
        converted: target layer name -> the PyTorch layout conversion done
            for it, e.g. "weight (O, I, *k) (8, 3, 3, 3) -> kernel (*k, I, O)".
        dropped: source arrays deliberately left out, as the checkpoint
            names them (BatchNorm's `bn1.num_batches_tracked`: Keras has no
            such variable).
        warnings: what a loaded layer does differently from the source
            although its weights loaded (a normalization epsilon, asymmetric
            padding); each is also issued as a `TransferWarning`.
    """

    path: str
    loaded: dict
    skipped: dict
    missing: tuple
    unused: tuple
    adapted: dict = dataclasses.field(default_factory=dict)
    how: dict = dataclasses.field(default_factory=dict)
    cast: dict = dataclasses.field(default_factory=dict)
    converted: dict = dataclasses.field(default_factory=dict)
    dropped: tuple = ()
    warnings: tuple = ()

    def __str__(self):
        def detail(t):
            parts = [self.how.get(t), self.converted.get(t), self.adapted.get(t)]
            if t in self.cast:
                parts.append(f"cast {self.cast[t]}")
            return "; ".join(p for p in parts if p)

        rows = [(t, s, "loaded", detail(t)) for t, s in self.loaded.items()]
        rows += [(t, "", "skipped", why) for t, why in self.skipped.items()]
        rows += [(t, "", "missing", "not in source; keeps its initial value")
                 for t in self.missing]
        header = ("layer", "from", "status", "detail")
        widths = [max(len(r[i]) for r in rows + [header]) for i in range(3)]
        lines = [
            f"Transfer report for {self.path}: {len(self.loaded)} loaded, "
            f"{len(self.skipped)} skipped, {len(self.missing)} missing, "
            f"{len(self.unused)} unused in source"
        ]
        for row in [header] + rows:
            cells = [c.ljust(w) for c, w in zip(row[:3], widths)] + [row[3]]
            lines.append("  " + "  ".join(cells).rstrip())
        if self.unused:
            lines.append("  unused in source: " + ", ".join(self.unused))
        if self.dropped:
            lines.append("  dropped (no Keras variable): " + ", ".join(self.dropped))
        lines.extend(f"  warning: {w}" for w in self.warnings)
        return "\n".join(lines)


def load_weights_by_name(
    model, path, *, skip_mismatch=False, rename=None, require=None, sha256=None,
    adapt_input_channels=None, custom_objects=None, safe_mode=True, include_task=False,
):
    """Loads weights into the layers of `model` whose names are in `path`.

    Reads, by layer name:

    - by-name HDF5 files: written by `save_weights_by_name`, or by Keras 2 /
      tf_keras `model.save_weights("x.h5")` / `model.save("x.h5")` (the layout
      of the official keras.applications weights, Keras 2.0-era files
      included), and `.keras` archives;
    - KerasHub presets (a directory from `save_to_preset`, or a `kaggle://` /
      `hf://` handle, downloaded by keras_hub): keras_hub rebuilds the
      backbone (with its task head if `include_task`), whose layers are the
      source; also a timm or Hugging Face checkpoint directory
      (`config.json` beside `model.safetensors`) that keras_hub converts;
    - PyTorch state_dicts: `.safetensors` (read without torch; sharded ones
      through their `model.safetensors.index.json`), `.pt` / `.pth` / `.bin`
      (through `torch.load(weights_only=True)` only), or a checkpoint
      directory keras_hub has no converter for. Each module path
      (`layer1.0.conv1`) is a source layer, compared as `layer1_0_conv1`, and
      its parameters are converted to the target layer's layout
      (`_torch_layout`: convolutions, depthwise and transposed ones, Dense
      with a Flatten's CHW -> HWC order, EinsumDense, normalizations,
      Embedding), each conversion listed in the report. This generic path
      covers networks with one PyTorch module per Keras layer (CNNs, MLPs,
      embeddings); a layer holding several modules (a transformer block) is
      a typed error pointing to KerasHub's converters.

    Layers are matched by name, inside nested models too, across the renames
    Keras 3 made (`conv1/conv` -> `conv1_conv`, `Conv` -> `conv`). Within a
    layer, arrays match by variable name where the names identify them, else
    by Keras' saved order (trainable first, whatever the current `trainable`
    flags), with every shape checked. (In a legacy `.h5` file a nested model
    with a single weighted layer reads as that layer renamed: it loads into a
    target nesting a model of its name, or with `rename=` into a flat one.
    Keras 3 writes `block/Dense_a/kernel` in group `base` for a model `block`
    nested in `base`: it loads into a target nesting both models the same
    way.) A layer loads whole or not at all, and nothing is assigned unless
    every check passes. A file is read only inside itself: HDF5 external
    links and external or virtual datasets are refused, and so is a
    safetensors header that lies about its tensors.

    Args:
        model: a built `keras.Model` (the target).
        path: a weights file (`.h5`, `.keras`, `.safetensors`, `.pt`, `.pth`,
            `.bin`, a `*.safetensors.index.json`), a KerasHub preset or
            checkpoint directory, or a KerasHub handle (`hf://...`).
        skip_mismatch: if True, layers whose arrays do not fit (shape, count,
            ambiguous order, no PyTorch layout rule) are skipped and reported
            instead of raising.
        rename: a dict mapping target layer names to source layer names
            (names not in it map to themselves), e.g. `{"Dense1_1": "Dense1"}`;
            a callable doing the same (returning None for the same name); or
            a list of `(regex, replacement)` pairs rewriting the source's
            layer names, in order, the first whose regex matches a name
            rewriting it (`[(r"^features\\.", "block_")]`).
        require: target layer names that must load, or a regular expression
            (str or compiled) that every required layer name fully matches.
        sha256: if given, the file's expected sha256 hex digest (64
            hexadecimal digits); a file that does not match is refused before
            it is read. The opening of the file that is checked is the one
            read, so a file swapped in after the check is never loaded. It
            checks one file: not a directory, a handle or a shard index.
        adapt_input_channels: a layer name (or list of names) whose kernel may
            differ from the file's in its input-channel axis (the second to
            last), e.g. a first convolution trained on RGB loaded into a
            grayscale model; the kernel is adapted with `adapt_input_conv`.
            True means the target's first Conv layer.
        custom_objects: for a `.keras` archive, passed to
            `keras.saving.load_model`.
        safe_mode: for a `.keras` archive, Keras' safe mode: an archive
            holding code (a `Lambda` layer) is refused unless this is False.
            For a KerasHub preset, every config it holds is checked first,
            and one naming a `Lambda` or a class from outside Keras and
            KerasHub is refused before anything is built, unless this is
            False (keras_hub then deserializes in Keras' own safe mode, which
            still refuses a `Lambda` unless
            `keras.config.enable_unsafe_deserialization()` was called).
        include_task: for a KerasHub preset with a task (`task.json`), or a
            timm classifier, rebuild the task model so that its head is a
            source too.

    Returns:
        A `TransferReport`.

    Raises:
        WeightFileError: the file is missing, damaged, not in a by-name layout
            (a native `.weights.h5`: the message says how to get one), or
            points outside itself.
        UnsafeSourceError: a source holds code and `safe_mode` is on, or a
            PyTorch file holds what `torch.load(weights_only=True)` refuses.
        MissingDependencyError: the source needs keras_hub or torch, which
            is not installed (the message names the extra).
        ChecksumError: `sha256` was given and the file does not match.
        ShapeMismatchError: a layer's arrays do not fit its variables (shape or
            count), unless `skip_mismatch`.
        WeightMatchError: a layer's arrays cannot be matched unambiguously,
            or a PyTorch module has no layout rule for its target layer,
            unless `skip_mismatch`.
        NoLayersMatchedError: no layer at all was loaded.
        MissingWeightsError: a layer named by `require` was not loaded.
        LayerSelectionError: `adapt_input_channels` names no layer of `model`.
        ArgumentTypeError, ArgumentError: an argument of the wrong type or
            form (`require=5`, `sha256="abc"`).

    Example:

    ```python
    source = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="Dense1"),
                               keras.layers.Dense(3, name="Head")])
    keras_transfer.save_weights_by_name(source, "small.h5")
    target = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="Dense1"),
                               keras.layers.Dense(2, name="NewHead")])
    report = keras_transfer.load_weights_by_name(target, "small.h5")
    print(report)   # the table below
    report.loaded, report.missing, report.unused   # ({'Dense1': 'Dense1'}, ('NewHead',), ('Head',))
    ```
    """
    _layers.check_model(model, "model")
    _files.check_sha256_argument(sha256)
    options = dict(skip_mismatch=skip_mismatch, rename=rename,
                   require=_checked_require(require),
                   adapt_input_channels=_checked_adapt(adapt_input_channels))
    if _keras_hub.is_handle(path):
        _one_file(sha256, path, "a KerasHub handle")
        source = _keras_hub.rebuild(path, include_task=include_task, safe_mode=safe_mode)
        return _transfer(_matching.model_groups(source), model, path, **options)
    path = os.fspath(path)
    if os.path.isdir(path):
        return _load_directory(model, path, sha256, include_task, safe_mode, options)
    if path.endswith(_safetensors.INDEX_SUFFIX):
        _one_file(sha256, path, "a shard index")
        return _load_shards(model, path, options)
    # One opening of the file is hashed, identified and read: a file swapped
    # in at `path` after the check is never what loads.
    with _open(path) as f:
        if sha256 is not None:
            _files.check_digest(path, _files.sha256_of(f), sha256, _NOT_PUBLISHED)
        # A `.keras` name and a zip end record make an archive, as in Keras'
        # load_model; otherwise the HDF5 signature decides, for an array's
        # bytes can hold a zip end record.
        if path.endswith(".keras") and zipfile.is_zipfile(f):
            source = _load_archive(f, path, custom_objects, safe_mode,
                                   copy=sha256 is not None)
            return _transfer(_matching.model_groups(source), model, path, **options)
        if _h5.is_hdf5(f):
            f.seek(0)
            with _h5.reading(path, "the file"):
                h5 = h5py.File(f, "r")
            with h5:
                return _transfer(_h5.read_groups(h5, path), model, path, **options)
        if _safetensors.is_safetensors(f):
            arrays = _state_dict.safetensors_arrays([(f, path)], path)
            return _transfer(_state_dict.groups_from_arrays(arrays, path), model, path,
                             **options)
        if path.endswith(_state_dict.TORCH_SUFFIXES) or _is_torch_zip(f):
            arrays = _state_dict.torch_file_arrays(f, path)
            return _transfer(_state_dict.groups_from_arrays(arrays, path), model, path,
                             **options)
        raise errors.WeightFileError(_unknown_format_message(f, path))


def _load_directory(model, path, sha256, include_task, safe_mode, options):
    """A KerasHub preset or a checkpoint directory (see `_keras_hub`)."""
    _one_file(sha256, path, "a directory")
    kind = _keras_hub.directory_kind(path)
    if kind is None:
        raise errors.WeightFileError(
            f"{path} is a directory holding neither a KerasHub preset (config.json with "
            "registered_name, beside metadata.json) nor a checkpoint "
            f"({', '.join(_keras_hub.CHECKPOINT_FILES)}). Pass a weights file or such a "
            "directory.")
    if kind == "preset" or (kind in ("timm", "transformers")
                            and _keras_hub.has_converter(path, kind)):
        source = _keras_hub.rebuild(path, include_task=include_task, safe_mode=safe_mode)
        return _transfer(_matching.model_groups(source), model, path, **options)
    checkpoint = _keras_hub.checkpoint_file(path)
    if checkpoint.endswith(_safetensors.INDEX_SUFFIX):
        return _load_shards(model, checkpoint, options)
    with _open(checkpoint) as f:
        if _safetensors.is_safetensors(f):
            arrays = _state_dict.safetensors_arrays([(f, checkpoint)], checkpoint)
        else:
            arrays = _state_dict.torch_file_arrays(f, checkpoint)
        return _transfer(_state_dict.groups_from_arrays(arrays, checkpoint), model,
                         checkpoint, **options)


def _load_shards(model, index, options):
    """A sharded safetensors checkpoint, every shard's header checked first."""
    shards = _safetensors.read_index(index)
    with contextlib.ExitStack() as stack:
        files = [(stack.enter_context(_open(shard)), shard) for shard in shards]
        arrays = _state_dict.safetensors_arrays(files, index)
        held = {shard: {a.name for a in arrays.values() if a.origin == shard}
                for shard in shards}
        for shard, names in shards.items():
            if set(names) != held[shard]:
                odd = sorted(set(names) ^ held[shard])[:5]
                raise errors.WeightFileError(
                    f"{index} and its shard {shard} disagree on which tensors the shard "
                    f"holds ({odd}): the index does not describe the checkpoint. Nothing "
                    "was loaded; fetch it again.")
        return _transfer(_state_dict.groups_from_arrays(arrays, index), model, index,
                         **options)


def _one_file(sha256, path, what):
    if sha256 is not None:
        raise errors.ArgumentError(
            f"sha256= checks one file, and {path} is {what}: pass the file itself "
            "(model.safetensors, a shard) to check it.")


def _is_torch_zip(f):
    """True for PyTorch's zip format (a `data.pkl` member), whatever the name."""
    f.seek(0)
    if not zipfile.is_zipfile(f):
        return False
    f.seek(0)
    try:
        with zipfile.ZipFile(f) as archive:
            return any(n.endswith("/data.pkl") or n == "data.pkl" for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def transfer_weights(source_model, target_model, *, skip_mismatch=False,
                     rename=None, require=None, layout=None):
    """Copies weights from a model in memory (or a state_dict) to another, by layer name.

    The same matching as `load_weights_by_name`, with a model as the source:
    a keras.applications model, a KerasHub backbone or task model, a model
    loaded from a `.keras` file; or, with `layout="torch"`, a PyTorch
    state_dict (a dict of numpy arrays or torch tensors, as
    `module.state_dict()` returns), converted as `load_weights_by_name`
    converts a PyTorch checkpoint. Nothing is assigned unless every check
    passes.

    Args:
        source_model: a built Keras 3 model to copy from, or a state_dict.
        target_model: a built Keras 3 model to copy into.
        skip_mismatch: if True, layers whose arrays do not fit are skipped and
            reported instead of raising.
        rename: as for `load_weights_by_name`.
        require: target layer names (or a regular expression) that must load.
        layout: `"torch"` for a state_dict (its only layout); None for a model.

    Returns:
        A `TransferReport` whose `path` is "model '<source name>'" (or
        "state_dict").

    Raises:
        ShapeMismatchError, WeightMatchError, NoLayersMatchedError,
        MissingWeightsError: as for `load_weights_by_name`.
        UnbuiltModelError: a model has no weights yet.
        ArgumentTypeError: a model is not a Keras 3 model, a state_dict holds
            something other than arrays, or `require` is neither names nor a
            regular expression.
        ArgumentError: a dict without `layout="torch"`, or another layout.

    Example:

    ```python
    base = keras.applications.MobileNetV2(weights=None, include_top=False,
                                          input_shape=(96, 96, 3))
    target = keras.Sequential([base, keras.layers.GlobalAveragePooling2D(),
                               keras.layers.Dense(3, name="NewHead")])
    trained = keras.applications.MobileNetV2(weights=None, include_top=False,
                                             input_shape=(96, 96, 3))
    report = keras_transfer.transfer_weights(trained, target)
    len(report.loaded), report.missing   # (104, ('NewHead',))
    ```
    """
    _layers.check_model(target_model, "target_model")
    options = dict(skip_mismatch=skip_mismatch, rename=rename,
                   require=_checked_require(require))
    if isinstance(source_model, collections.abc.Mapping):
        if layout != "torch":
            raise errors.ArgumentError(
                "transfer_weights: a dict source is a PyTorch state_dict, read with "
                f"layout='torch'; received layout={layout!r}.")
        arrays = _state_dict.dict_arrays(source_model, "state_dict")
        return _transfer(_state_dict.groups_from_arrays(arrays, "state_dict"), target_model,
                         "state_dict", **options)
    if layout not in (None, "keras"):
        raise errors.ArgumentError(
            f"transfer_weights: layout={layout!r} is for a state_dict (a dict of arrays); "
            "a Keras model's weights are in Keras' own layout.")
    _layers.check_model(source_model, "source_model")
    return _transfer(_matching.model_groups(source_model), target_model,
                     f"model '{source_model.name}'", **options)


def _transfer(groups, model, where, *, skip_mismatch, rename, require,
              adapt_input_channels=None):
    source_of, groups, origin = _renamed(rename, groups)
    units = _matching.target_units(model)
    adapt = _adapt_set(model, units, adapt_input_channels)
    models = {c.name: {layer.name for layer in _layers.units(c)}
              for c in _layers.containers(model)[1:]}
    plan = _matching.plan(units, groups, source_of, models=models,
                          skip_mismatch=skip_mismatch, adapt=adapt, where=where,
                          model_inputs=model.inputs if _layers.traced_model(model) else ())
    if not plan.matches:
        raise errors.NoLayersMatchedError(_zero_match_message(
            model, where, groups, plan, source_of))
    loaded = {m.unit.name: origin.get(m.source, m.source) for m in plan.matches}
    _check_required(model, units, require, loaded, plan.skipped, where)
    # Warned about before anything is assigned: a warning turned into an error
    # (-W error) then refuses the load as a whole.
    cautions = [text for m in plan.matches if m.converted is not None
                for text in m.cautions + tuple(_torch_layout.warnings_for(m.unit.layer))]
    for text in cautions:
        warnings.warn(f"{where}: {text}", errors.TransferWarning, stacklevel=3)
    # Read every array before assigning any, so a damaged file changes nothing:
    # one copy of the weights, each converted as it is read (the source's own
    # array dropped at once), and each released once assigned.
    values = [(variable, _value(array, variable, where))
              for m in plan.matches for variable, array in m.pairs]
    values.reverse()
    while values:
        variable, value = values.pop()
        variable.assign(value)
        del value
    for m in plan.matches:
        # As Keras' loaders do: a layer may cache what it derives from its
        # weights (Normalization's broadcast mean and variance).
        if hasattr(m.unit.layer, "finalize_state"):
            m.unit.layer.finalize_state()
        if not m.unit.own:
            _layers.reset_lora(m.unit.layer)  # the loaded kernels, as they are
    return TransferReport(
        path=where, loaded=loaded, skipped=plan.skipped,
        missing=tuple(plan.missing), unused=tuple(origin.get(u, u) for u in plan.unused),
        adapted={m.unit.name: m.adapted for m in plan.matches if m.adapted},
        how={m.unit.name: m.how for m in plan.matches},
        cast={m.unit.name: m.cast for m in plan.matches if m.cast},
        converted={m.unit.name: m.converted for m in plan.matches if m.converted},
        dropped=tuple(name for m in plan.matches for name in m.dropped),
        warnings=tuple(cautions),
    )


def _value(array, variable, where):
    value = array.read()
    if value.shape != tuple(array.shape):  # the file changed under us
        raise errors.WeightFileError(
            f"{where}: array '{array.name}' of layer '{array.group}' was listed "
            f"with shape {tuple(array.shape)} but read with shape {value.shape}: "
            "the file changed while it was read, or is damaged. Nothing was "
            "loaded; load it again once it is complete (sha256= checks that it "
            "is the file you expect).")
    if value.shape != tuple(variable.shape):
        value = adapt_input_conv(value, variable.shape[-2])
    # contiguous here: a transposed view would keep the source's array alive
    # and be copied again by the backend's assign
    value = value.astype(_matching.numpy_dtype(variable.dtype), copy=False)
    return value if value.flags.c_contiguous else value.copy(order="C")


def _load_archive(f, path, custom_objects, safe_mode, copy):
    """The model in the `.keras` archive open as `f`, deserialized by Keras.

    Keras' public `load_model` reads a path only; with `copy`, the bytes of `f`
    (the ones that were checked) are copied to a private folder and read there.
    """
    if not copy:
        return _load_archive_at(path, path, custom_objects, safe_mode)
    with tempfile.TemporaryDirectory(prefix="keras_transfer.") as folder:
        checked = os.path.join(folder, "source.keras")
        f.seek(0)
        with open(checked, "wb") as out:
            shutil.copyfileobj(f, out)
        return _load_archive_at(checked, path, custom_objects, safe_mode)


def _load_archive_at(read, path, custom_objects, safe_mode):
    try:
        return keras.saving.load_model(
            read, custom_objects=custom_objects, compile=False, safe_mode=safe_mode)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise errors.WeightFileError(
            f"{path} is a damaged Keras archive ({type(e).__name__}: {e}). "
            "Nothing was loaded; fetch or save it again.") from e
    except ValueError as e:
        if "safe_mode" in str(e):
            raise errors.UnsafeSourceError(
                f"{path} holds code (a `Lambda` layer, say) that Keras' safe "
                "mode refuses to load. If you trust its source, pass "
                f"safe_mode=False. Keras said: {e}") from e
        raise errors.WeightFileError(
            f"{path} could not be loaded as a Keras archive ({e}). If it is "
            "damaged, fetch or save it again.") from e
    except (TypeError, KeyError, OSError) as e:
        raise errors.WeightFileError(
            f"{path} could not be loaded as a Keras archive "
            f"({type(e).__name__}: {e}). If it holds custom layers, pass "
            "custom_objects={'Name': cls}.") from e


def _adapt_set(model, units, adapt):
    if adapt is None or adapt is False:
        return frozenset()
    if adapt is True:
        for unit in units:
            if isinstance(unit.layer, (keras.layers.Conv1D, keras.layers.Conv2D,
                                       keras.layers.Conv3D)):
                return frozenset([unit.name])
        raise errors.LayerSelectionError(
            f"adapt_input_channels=True, but model '{model.name}' has no Conv layer.")
    names = {adapt} if isinstance(adapt, str) else set(adapt)
    unknown = sorted(names - {u.name for u in units})
    if unknown:
        raise errors.LayerSelectionError(
            f"adapt_input_channels names {unknown}, which are not layers with "
            f"weights of model '{model.name}'. Its layers: "
            f"{[u.name for u in units][:20]}.")
    return frozenset(names)


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


def _open(path):
    if not os.path.isfile(path):
        raise errors.WeightFileError(
            f"No weights file at {path!r}: expected an HDF5 file written by "
            "save_weights_by_name or Keras 2's save_weights('x.h5'), a `.keras` "
            "archive, a PyTorch checkpoint (.safetensors, .pt, .pth, .bin), or a "
            "KerasHub preset or checkpoint directory.")
    try:
        return open(path, "rb")
    except OSError as e:
        raise errors.WeightFileError(
            f"{path} cannot be opened ({type(e).__name__}: {e}). Check that it "
            "is readable.") from e


def _unknown_format_message(f, path):
    what = "a zip archive not named `.keras`" if zipfile.is_zipfile(f) else (
        "not an HDF5 file, nor safetensors (empty, truncated or another format)")
    return (f"{path} is {what}; expected a by-name weights file "
            "(save_weights_by_name, or Keras 2 / tf_keras save_weights('x.h5')), "
            "a Keras archive named `.keras`, or a PyTorch checkpoint (.safetensors, "
            ".pt, .pth, .bin).")


def _names(value):
    """`value` as a tuple of strings, or None if it is not an iterable of them."""
    try:
        names = tuple(value)
    except TypeError:
        return None
    return names if all(isinstance(n, str) for n in names) else None


def _checked_require(require):
    if require is None or isinstance(require, (str, re.Pattern)):
        return require
    names = _names(require)
    if names is None:
        raise errors.ArgumentTypeError(
            "require= must be a list of layer names or a regular expression "
            f"(str or compiled), received {type(require).__name__} {require!r}.")
    return names


def _checked_adapt(adapt):
    if adapt is None or isinstance(adapt, (bool, str)):
        return adapt
    names = _names(adapt)
    if names is None:
        raise errors.ArgumentTypeError(
            "adapt_input_channels= must be True, a layer name or a list of layer "
            f"names, received {type(adapt).__name__} {adapt!r}.")
    return names


def _renamed(rename, groups):
    """`rename=` applied: `(target name -> source name, the source's groups,
    {new group name: the name in the source})`.

    A dict or a callable maps target names to source names; a list of
    `(regex, replacement)` pairs rewrites the source's group names instead,
    the first pair whose regex matches a name (`re.search`) rewriting it.
    """
    if rename is None:
        return (lambda name: name), groups, {}
    if isinstance(rename, dict):
        return (lambda name: rename.get(name, name)), groups, {}
    if callable(rename):
        return (lambda name: rename(name) or name), groups, {}
    if isinstance(rename, (list, tuple)):
        pairs = _rename_pairs(rename)
        renamed, origin = [], {}
        for group in groups:
            hit = next((p for p in pairs if p[0].search(group.name)), None)
            if hit is None or group.name == _matching.TOP_GROUP:
                renamed.append(group)
                continue
            name = hit[0].sub(hit[1], group.name, count=1)
            origin[name] = group.name
            # arrays keep the names they had in their group
            arrays = [dataclasses.replace(a, relative=_matching.relative_of(a, group.name))
                      for a in group.arrays]
            renamed.append(dataclasses.replace(group, name=name, arrays=arrays))
        clash = [n for n, count in collections.Counter(g.name for g in renamed).items()
                 if count > 1]
        if clash:
            raise errors.ArgumentError(
                f"rename= gives several source layers the name(s) {clash[:5]}; make the "
                "patterns tell them apart.")
        return (lambda name: name), renamed, origin
    raise errors.ArgumentTypeError(
        "rename must be a dict, a callable, or a list of (regex, replacement) pairs, "
        f"received {type(rename).__name__}.")


def _rename_pairs(rename):
    pairs = []
    for pair in rename:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2
                and isinstance(pair[0], (str, re.Pattern)) and isinstance(pair[1], str)):
            raise errors.ArgumentTypeError(
                "rename= as a list takes (regex, replacement) pairs of strings, received "
                f"{pair!r}.")
        try:
            pairs.append((re.compile(pair[0]), pair[1]))
        except re.error as e:
            raise errors.ArgumentError(f"rename= pattern {pair[0]!r} is not a regex: {e}.") from e
    return pairs


def _zero_match_message(model, where, groups, plan, source_of):
    lines = [f"No layer of model '{model.name}' was loaded from {where}."]
    if plan.skipped:
        lines.append(f"Every match was skipped: {plan.skipped}.")
    names = [g.name for g in groups if g.arrays]
    lowered = {g.lower(): g for g in names}
    for name in plan.missing:
        source = source_of(name)
        close = [lowered[c] for c in difflib.get_close_matches(
            source.lower(), list(lowered), n=4)
            if lowered[c] != source][:3]
        if close:
            lines.append(f"  '{name}' is not in the source; close: {close}")
    lines.append(f"The source holds: {names[:20]}" + (" ..." if len(names) > 20 else ""))
    lines.append("Name the layers alike or pass rename={target: source}.")
    return "\n".join(lines)


def _check_required(model, units, require, loaded, skipped, where):
    if require is None:
        return
    names = [u.name for u in units]
    if isinstance(require, (str, re.Pattern)):
        pattern = re.compile(require)
        wanted = [n for n in names if pattern.fullmatch(n)]
        if not wanted:
            raise errors.MissingWeightsError(
                f"require={pattern.pattern!r} matches no layer with weights "
                f"in model '{model.name}' (layers: {names[:20]}).")
    else:
        wanted = list(require)
    absent = [n for n in wanted if n not in loaded]
    if absent:
        why = {n: skipped.get(n, "not in source" if n in names
                              else "no such layer in the model")
               for n in absent}
        raise errors.MissingWeightsError(
            f"Required layers were not loaded from {where}: {why}.")


MANIFEST_NAME = "MANIFEST.json"


def manifest_entry(path):
    """The entry for `path` in the `MANIFEST.json` beside it, or None.

    A manifest maps file names to what is known of them: at least `sha256`,
    and for shipped weights the command, seed and accuracy that produced them.
    Pass `sha256=manifest_entry(path)["sha256"]` to `load_weights_by_name` to
    refuse a file that is not the one recorded.
    """
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
    manifest = os.path.join(os.path.dirname(os.path.abspath(path)), MANIFEST_NAME)
    entries = {}
    if os.path.isfile(manifest):
        with open(manifest) as f:
            entries = json.load(f)
    entries[os.path.basename(path)] = {"sha256": _files.sha256_of(path), **info}
    _files.write_json(entries, manifest)
    return entries[os.path.basename(path)]
