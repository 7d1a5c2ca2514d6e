"""Private: KerasHub presets and checkpoint directories as by-name sources.

A KerasHub preset (`backbone.save_to_preset(dir)`) holds `config.json` (the
serialized backbone, with a `registered_name`), `metadata.json`,
`model.weights.h5` (Keras 3's native layout, keyed by object path, not by
layer name), and for a task `task.json` / `task.weights.h5`. Only the
architecture the config describes can read those weights, so keras_hub
rebuilds it (`Backbone.from_preset`, or the task class `task.json` names)
and the rebuilt model is the source, matched by name as any model in memory.

A timm (`config.json` with `architecture`) or Hugging Face transformers
(`model_type`) checkpoint directory is rebuilt the same way when keras_hub
has a converter for it; any other is a plain PyTorch state_dict.

Before anything is built, every object the configs name is checked: a
`Lambda` (code) or a class from outside Keras and KerasHub is refused in safe
mode, as Keras' own safe mode refuses a `.keras` archive holding code.

keras_hub is optional (`pip install 'keras_transfer[keras-hub]'`) and is
imported only here, only when such a source is loaded.
"""

import json
import os

import keras

from keras_transfer import errors

HANDLE_PREFIXES = ("kaggle://", "hf://", "gs://", "modelscope://")
CONFIG = "config.json"
METADATA = "metadata.json"
TASK_CONFIG = "task.json"
CHECKPOINT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
# The serialized objects a preset may hold, each deserialized by keras_hub.
KERAS_CONFIGS = (CONFIG, TASK_CONFIG, "preprocessor.json", "tokenizer.json",
                 "image_converter.json", "audio_converter.json", "video_converter.json")
_SAFE_PACKAGES = ("keras", "keras_hub", "keras_nlp", "keras_cv")
_CODE = ("Lambda", "__lambda__")


def is_handle(path):
    """True for a KerasHub handle to download (`hf://user/model`, ...)."""
    return isinstance(path, str) and path.startswith(HANDLE_PREFIXES)


def directory_kind(path):
    """What a directory holds: "preset" (KerasHub), "timm" or "transformers"
    (a checkpoint directory with a config), "state_dict" (checkpoint files
    alone), or None.

    Raises:
        WeightFileError: `config.json` is there but is not a JSON object.
    """
    config = _read_json(path, CONFIG) if os.path.isfile(os.path.join(path, CONFIG)) else None
    if config is not None:
        if "registered_name" in config and os.path.isfile(os.path.join(path, METADATA)):
            return "preset"
        if "architecture" in config:
            return "timm"
        if "model_type" in config:
            return "transformers"
    if any(os.path.isfile(os.path.join(path, name)) for name in CHECKPOINT_FILES):
        return "state_dict"
    return None


def checkpoint_file(path):
    """The state_dict file of a checkpoint directory: the safetensors file,
    its shard index, or `pytorch_model.bin`, in that order of preference."""
    for name in CHECKPOINT_FILES:
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    raise errors.WeightFileError(
        f"{path} holds a checkpoint config but none of {list(CHECKPOINT_FILES)}.")


def has_converter(path, kind):
    """Whether keras_hub converts the timm / transformers directory `path`:
    it has a converter for the architecture and takes its variant.

    Raises:
        MissingDependencyError: keras_hub is not installed.
    """
    import_keras_hub(path)
    # Going around keras_hub: it has no public "is there a converter" query;
    # building its preset loader is what raises "no converter".
    # tests/test_weights_keras_hub.py (a timm directory of an architecture
    # without a converter goes the PyTorch path) fails if this changes.
    from keras_hub.src.utils import preset_utils  # noqa: PLC0415 (optional package)

    try:
        loader = preset_utils.get_preset_loader(path)
        loader.check_backbone_class()
        if kind == "timm":
            loader.converter.convert_backbone_config(loader.config)
    except (ValueError, KeyError, NotImplementedError):
        return False
    return True


def rebuild(path, *, include_task, safe_mode):
    """The model a preset, handle or converted checkpoint directory describes,
    built and loaded by keras_hub: its task model (head included) when
    `include_task` and the preset has one, else its backbone.

    Raises:
        MissingDependencyError: keras_hub is not installed.
        UnsafeSourceError: in safe mode, a config names a `Lambda` or a class
            from outside Keras and KerasHub.
        WeightFileError: keras_hub could not build or load it.
    """
    keras_hub = import_keras_hub(path)
    from keras_hub.src.utils import preset_utils  # noqa: PLC0415 (optional package)

    try:
        # for a handle, keras_hub's own download (its cache) fetches the files
        configs = {name: preset_utils.load_json(path, name) for name in _config_names(path)
                   if preset_utils.check_file_exists(path, name)}
    except (OSError, ValueError) as e:
        raise errors.WeightFileError(f"{path}: cannot read its configs ({e}).") from e
    if CONFIG not in configs:
        raise errors.WeightFileError(f"{path} has no {CONFIG}.")
    if safe_mode:  # every config keras_hub may deserialize, before anything is built
        for name, value in configs.items():
            check_safe(value, f"{path}/{name}")
    config = configs[CONFIG]
    task_config = configs.get(TASK_CONFIG) if include_task else None
    try:
        if task_config is not None:
            task_class = keras.saving.get_registered_object(task_config["registered_name"])
            if task_class is None or not issubclass(task_class, keras_hub.models.Task):
                raise errors.WeightFileError(
                    f"{path}/{TASK_CONFIG} names {task_config['registered_name']!r}, which is "
                    "not a KerasHub task class.")
            return task_class.from_preset(path)
        if include_task and "architecture" in config:  # a timm classifier's head
            return keras_hub.models.ImageClassifier.from_preset(path)
        return keras_hub.models.Backbone.from_preset(path)
    except errors.TransferError:
        raise
    except (ValueError, TypeError, KeyError, OSError) as e:
        raise errors.WeightFileError(
            f"{path}: keras_hub could not rebuild it ({type(e).__name__}: "
            f"{str(e)[:400]}).") from e


def _config_names(path):
    """The JSON files of a preset to check: the ones keras_hub reads, and for a
    local directory every `*.json` in it."""
    names = list(KERAS_CONFIGS)
    if os.path.isdir(path):
        names += sorted(n for n in os.listdir(path) if n.endswith(".json") and n not in names)
    return names


def check_safe(config, where):
    """Refuses a config naming code or a class from outside Keras/KerasHub.

    Every serialized object (a dict with `class_name`) at any depth must come
    from a Keras package, or be registered with Keras in this process (your
    own `register_keras_serializable` classes); a `Lambda` never passes.

    Raises:
        UnsafeSourceError: the first object that fails, named with its path
            in the config.
    """
    for trail, node in _objects(config, ()):
        name = node.get("class_name")
        module = node.get("module") or ""
        at = "/".join(trail) or "(top)"
        if name in _CODE:
            raise errors.UnsafeSourceError(
                f"{where}: '{at}' is a {name}, which holds code; refused in safe mode, as "
                "Keras refuses it. If you trust its source, pass safe_mode=False.")
        registered = node.get("registered_name")
        known = isinstance(registered, str) and keras.saving.get_registered_object(
            registered) is not None
        if module.split(".")[0] not in _SAFE_PACKAGES and not known:
            raise errors.UnsafeSourceError(
                f"{where}: '{at}' names class {name!r} from module {module!r}, outside Keras "
                "and KerasHub, and not registered with Keras here; refused in safe mode "
                "before anything was built. Import and register it "
                "(keras.saving.register_keras_serializable) if you trust it, or pass "
                "safe_mode=False.")


def _objects(node, trail):
    if isinstance(node, dict):
        if "class_name" in node:
            yield trail, node
        for key, value in node.items():
            yield from _objects(value, trail + (str(key),))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _objects(value, trail + (str(i),))


def import_keras_hub(source):
    """keras_hub, or a `MissingDependencyError` naming the extra."""
    try:
        import keras_hub  # noqa: PLC0415 (optional package, about 9 s to import)
    except ImportError as e:
        raise errors.MissingDependencyError(
            f"{source} is a KerasHub preset or checkpoint directory, which keras_hub "
            "rebuilds, and keras_hub is not installed: pip install "
            "'keras_transfer[keras-hub]'.") from e
    return keras_hub


def _read_json(folder, name):
    path = os.path.join(folder, name)
    try:
        with open(path, encoding="utf8") as f:
            value = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise errors.WeightFileError(f"{path} is not readable JSON ({e}).") from e
    if not isinstance(value, dict):
        raise errors.WeightFileError(f"{path} is not a JSON object.")
    return value
