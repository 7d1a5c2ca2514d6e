"""The reference CNN of the Fashion-MNIST -> MNIST pipeline, with named layers.

The source model and the target model share their feature layers by name
(`FEATURE_LAYERS`), so the target takes them from the source's by-name weights
file; the target's head has new names (`Dense1_1`, `Dense2_2`) and starts fresh.

BatchNormalization uses `momentum=0.9` (Keras' default is 0.99). With few
training images, a BN layer trained from scratch sees only a few dozen updates
of its moving statistics; at 0.99 they stay close to their initial values
(mean 0, variance 1), so the model predicts one constant class at inference
time although it fits its training batches. At 0.9 they settle within tens of
steps. The transfer arm is not affected: its BatchNormalization layers are
frozen and keep the source's statistics.

Its BatchNormalization layers are `keras_transfer.layers.FusedBatchNormalization`:
Keras' BatchNormalization with TensorFlow's fused kernel when it trains on the
TensorFlow backend (Keras 3 composes it from several ops there: a training
step of this CNN takes 1.4x as long on a CPU); the same weights, names and
results otherwise. `import keras_transfer` registers the class, so a `.keras`
file of these models loads where keras_transfer is imported.
"""

import keras

from keras_transfer import _checks
from keras_transfer.layers import FusedBatchNormalization

FEATURE_LAYERS = (
    "Conv1", "Bn1", "Relu1", "Maxpool1",
    "Conv2", "Bn2", "Relu2", "Maxpool2",
    "Conv3", "Bn3", "Relu3", "Flatten",
)
BN_MOMENTUM = 0.9


def feature_layers():
    """Fresh instances of the 12 named feature layers."""
    def bn(name):
        return FusedBatchNormalization(momentum=BN_MOMENTUM, name=name)

    return [
        keras.layers.Conv2D(32, 3, padding="same", name="Conv1"), bn("Bn1"),
        keras.layers.ReLU(name="Relu1"), keras.layers.MaxPooling2D(name="Maxpool1"),
        keras.layers.Conv2D(64, 3, padding="same", name="Conv2"), bn("Bn2"),
        keras.layers.ReLU(name="Relu2"), keras.layers.MaxPooling2D(name="Maxpool2"),
        keras.layers.Conv2D(64, 3, padding="same", name="Conv3"), bn("Bn3"),
        keras.layers.ReLU(name="Relu3"), keras.layers.Flatten(name="Flatten"),
    ]


def _cnn(head_names, num_classes, name, owner):
    num_classes = _checks.whole_number(num_classes, "num_classes", owner=owner, minimum=2,
                                       why="the reference CNN is a softmax classifier")
    dense, out = head_names
    return keras.Sequential(
        [keras.Input((28, 28, 1)), *feature_layers(),
         keras.layers.Dense(128, activation="relu", name=dense),
         keras.layers.Dropout(0.5, name="Dropout"),
         keras.layers.Dense(num_classes, activation="softmax", name=out)],
        name=name)


def source_cnn(num_classes=10):
    """The source CNN: feature layers, then `Dense1` (128), `Dropout`, `Dense2`.

    Args:
        num_classes: the classes of the softmax output.

    Returns:
        A `keras.Sequential` on `(28, 28, 1)` inputs.

    Raises:
        ArgumentError: `num_classes` is not an int >= 2.

    Example:

    ```python
    from keras_transfer.pipeline import reference

    model = reference.source_cnn()
    model.output_shape   # (None, 10)
    ```
    """
    return _cnn(("Dense1", "Dense2"), num_classes, "fashion_mnist_cnn", "source_cnn")


def target_cnn(num_classes=10):
    """The target CNN: the same feature layers, a new head `Dense1_1`, `Dense2_2`.

    Takes, returns and raises as `source_cnn`; only the head's names differ,
    so that loading the source by name leaves the head fresh.

    Example:

    ```python
    from keras_transfer.pipeline import reference

    head = [layer.name for layer in reference.target_cnn(num_classes=5).layers][-3:]
    head   # ['Dense1_1', 'Dropout', 'Dense2_2']
    ```
    """
    return _cnn(("Dense1_1", "Dense2_2"), num_classes, "mnist_cnn", "target_cnn")
