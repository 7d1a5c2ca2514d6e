"""The typed errors keras_transfer raises.

Every error a user can cause with bad input derives from `TransferError`, so
scripts can catch one type and print a one-line message. Each subclass also
derives from the built-in exception a Keras user would expect (`ValueError`,
`FileNotFoundError`, ...), so existing `except ValueError:` code keeps working.
"""


class TransferError(Exception):
    """Base class of every error raised by keras_transfer for bad input."""


class WeightFileError(TransferError, ValueError):
    """A weights file is missing, unreadable, or not in the by-name layout."""


class ChecksumError(WeightFileError):
    """A file's sha256 digest is not the expected one."""


class ShapeMismatchError(TransferError, ValueError):
    """A saved array does not fit the variable it was matched to."""


class NoLayersMatchedError(TransferError, ValueError):
    """A by-name load matched no layer at all (the classic silent by_name bug)."""


class MissingWeightsError(TransferError, ValueError):
    """Layers named in `require=` were not loaded."""


class LayerSelectionError(TransferError, ValueError):
    """A layer selector (index, name, pattern) does not fit the model."""


class DataNotFoundError(TransferError, FileNotFoundError):
    """A data set is not present locally and could not be fetched."""


class DataFormatError(TransferError, ValueError):
    """A data file exists but is truncated or not in the expected format."""


class DuplicateLayerNameError(TransferError, ValueError):
    """Two layers of one model share a name, so by-name transfer is ambiguous."""


class HubModuleError(TransferError, ValueError):
    """A handle does not lead to a usable SavedModel / TF Hub module."""


class ArgumentError(TransferError, ValueError):
    """An argument's value does not fit: a count, a range, a combination."""


class ArgumentTypeError(TransferError, TypeError):
    """An argument is of a type the function does not take."""


class BackendError(TransferError, RuntimeError):
    """A feature needs another Keras backend (TensorFlow for TF Hub modules)."""


class WeightMatchError(TransferError, ValueError):
    """A source layer's arrays cannot be matched to a target layer unambiguously."""


class UnbuiltModelError(TransferError, ValueError):
    """A model has no weights yet: it must be built before its weights move."""


class UnsafeSourceError(WeightFileError):
    """A source holds code that a safe loader refuses: a `.keras` archive or a
    KerasHub preset config naming a `Lambda` or a class outside Keras, or a
    PyTorch checkpoint holding a pickled callable."""


class MissingDependencyError(TransferError, ImportError):
    """A source needs an optional package (keras_hub, torch) that is not installed."""


class TransferWarning(UserWarning):
    """Something that worked but does not do all that was asked: a load that
    may not behave as the source did (a normalization epsilon, asymmetric
    padding; also listed in `TransferReport.warnings`), or a phase 1 cached
    without augmentation."""

