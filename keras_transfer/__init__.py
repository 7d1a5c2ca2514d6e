"""keras_transfer: transfer learning for Keras 3.

By-name weight transfer, freezing, and a two-phase fine-tuning schedule that
really trains inside `model.fit`, on every Keras 3 backend.

Modules, bottom to top: `errors`, private helpers (`_layers`, `_files`,
`_optimizer_state`); `layers`, `weights`, `freezing`, `groups`, `warm_start`,
`learning_rates`, `optimizers`; the callbacks (`schedules`), the
learning-rate finder (`lr_finder`) and `caching`; the one-call `recipes`.
Beside them: `heads`, `hub` (TensorFlow backend only), `renames` (`rename=`
recipes for other libraries' checkpoints) and `vision` (fine-tune on a folder of
images).

Docstring examples run as written in `tests/test_docstrings.py`, with
`import math, keras, numpy as np, keras_transfer` and a few names given:
`model` and `target`, the reference pipeline's target CNN (28x28x1 images, 10
classes; its 12 feature layers `Conv1`, `Bn1`, ..., `Flatten`); `base`, those
12 feature layers as a model; `x, y` (64 images and labels) and `x_val,
y_val` (32); `train`, `x, y` as a `tf.data.Dataset` of 16-image batches;
`epochs = 2`; and `source.h5`, the source CNN's weights by name. A line
ending in a `# <Python literal>` comment is checked to give that value.

The Fashion-MNIST -> MNIST reference pipeline (its data, CNN, comparison and
the scripts' helpers) is one client of the library and lives apart, in
`keras_transfer.pipeline`; importing the package imports nothing of it.
"""

from keras_transfer import layers  # registers FusedBatchNormalization for load_model
from keras_transfer import renames
from keras_transfer import vision  # registers ApplicationPreprocessing for load_model
from keras_transfer.caching import fit_head_cached
from keras_transfer.errors import ArgumentError
from keras_transfer.errors import ArgumentTypeError
from keras_transfer.errors import BackendError
from keras_transfer.errors import ChecksumError
from keras_transfer.errors import DataFormatError
from keras_transfer.errors import DataNotFoundError
from keras_transfer.errors import DuplicateLayerNameError
from keras_transfer.errors import HubModuleError
from keras_transfer.errors import LayerSelectionError
from keras_transfer.errors import MissingDependencyError
from keras_transfer.errors import MissingWeightsError
from keras_transfer.errors import NoLayersMatchedError
from keras_transfer.errors import ShapeMismatchError
from keras_transfer.errors import TransferError
from keras_transfer.errors import TransferWarning
from keras_transfer.errors import UnbuiltModelError
from keras_transfer.errors import UnsafeSourceError
from keras_transfer.errors import WeightFileError
from keras_transfer.errors import WeightMatchError
from keras_transfer.freezing import freeze
from keras_transfer.freezing import select_layers
from keras_transfer.freezing import trainable_summary
from keras_transfer.freezing import unfreeze
from keras_transfer.groups import layer_groups
from keras_transfer.heads import attach_heads
from keras_transfer.heads import replace_head
from keras_transfer.hub import HubLayer
from keras_transfer.hub import export_hub_module
from keras_transfer.layers import FusedBatchNormalization
from keras_transfer.learning_rates import OneCycle
from keras_transfer.learning_rates import PhaseLearningRate
from keras_transfer.lr_finder import LearningRateCurve
from keras_transfer.lr_finder import find_learning_rate
from keras_transfer.optimizers import DiscriminativeOptimizer
from keras_transfer.optimizers import discriminative_optimizer
from keras_transfer.schedules import FinetuningSchedule
from keras_transfer.schedules import GradualUnfreezing
from keras_transfer.schedules import TwoPhaseSchedule
from keras_transfer.recipes import fine_tune
from keras_transfer.recipes import fit_two_phase
from keras_transfer.warm_start import shrink_perturb
from keras_transfer.weights import TransferReport
from keras_transfer.weights import load_weights_by_name
from keras_transfer.weights import save_weights_by_name
from keras_transfer.weights import transfer_weights

__version__ = "0.1.0"

__all__ = [
    "ArgumentError",
    "ArgumentTypeError",
    "BackendError",
    "ChecksumError",
    "DataFormatError",
    "DataNotFoundError",
    "DiscriminativeOptimizer",
    "DuplicateLayerNameError",
    "FinetuningSchedule",
    "FusedBatchNormalization",
    "GradualUnfreezing",
    "HubLayer",
    "HubModuleError",
    "LayerSelectionError",
    "LearningRateCurve",
    "MissingDependencyError",
    "MissingWeightsError",
    "NoLayersMatchedError",
    "OneCycle",
    "PhaseLearningRate",
    "ShapeMismatchError",
    "TransferError",
    "TransferReport",
    "TransferWarning",
    "TwoPhaseSchedule",
    "UnbuiltModelError",
    "UnsafeSourceError",
    "WeightFileError",
    "WeightMatchError",
    "attach_heads",
    "discriminative_optimizer",
    "export_hub_module",
    "find_learning_rate",
    "fine_tune",
    "fit_head_cached",
    "fit_two_phase",
    "freeze",
    "layer_groups",
    "load_weights_by_name",
    "replace_head",
    "save_weights_by_name",
    "select_layers",
    "shrink_perturb",
    "trainable_summary",
    "transfer_weights",
    "unfreeze",
]
