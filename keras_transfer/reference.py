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

Its BatchNormalization layers are `FusedBatchNormalization`: Keras'
BatchNormalization with TensorFlow's fused kernel when it trains on the
TensorFlow backend (Keras 3 composes it from several ops there: a training
step of this CNN takes 1.4x as long on a CPU); the same weights, names and
results otherwise. `import keras_transfer` registers the class, so a `.keras`
file of these models loads where keras_transfer is imported.
"""

import keras

from keras_transfer import errors

FEATURE_LAYERS = (
    "Conv1", "Bn1", "Relu1", "Maxpool1",
    "Conv2", "Bn2", "Relu2", "Maxpool2",
    "Conv3", "Bn3", "Relu3", "Flatten",
)
BN_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package="keras_transfer")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` that trains with TensorFlow's fused kernel.

    Keras 3 computes a training step of BatchNormalization from separate ops
    (moments, then normalization, each differentiated on its own); Keras 2
    and tf_keras called TensorFlow's `FusedBatchNormV3`, one kernel forward
    and one backward. On the reference CNN, on 2 CPU cores, Keras' layer
    makes a training step take 1.41x as long (`bench/fused_batchnorm.py`).

    In training mode, on the TensorFlow backend, for 4-D float32 inputs with
    the features last, no mask, `center` and `scale`, and neither `renorm` nor
    `synchronized`, the batch statistics and the normalized output come from
    the fused kernel; the moving statistics are updated as Keras does (with
    the batch's biased variance: the kernel's is Bessel-corrected, and is
    scaled back). Everything else (inference, other backends, other inputs)
    is Keras' own `call`. Weights, their names and the config are Keras';
    a `.keras` file records the class as `keras_transfer>FusedBatchNormalization`,
    which loads once keras_transfer is imported.
    `tests/test_reference.py` compares it with Keras' layer, and fails when
    Keras' BatchNormalization takes a `fused` argument again.

    Example:

    ```python
    bn = keras_transfer.reference.FusedBatchNormalization(momentum=0.9, name="Bn1")
    ```
    """

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, self.gamma, self.beta, epsilon=self.epsilon, is_training=True)
        count = tf.size(inputs, out_type=tf.int64) // tf.shape(inputs, out_type=tf.int64)[-1]
        count = tf.cast(count, variance.dtype)
        variance = variance * (count - 1.0) / tf.maximum(count, 1.0)  # biased, as Keras
        self.moving_mean.assign(
            self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return outputs

    def _fusable(self, inputs, mask):
        return (keras.backend.backend() == "tensorflow" and mask is None
                and len(inputs.shape) == 4 and self.axis in (-1, 3)
                and keras.backend.standardize_dtype(inputs.dtype) == "float32"
                and self.compute_dtype == "float32" and self.center and self.scale
                and not self.renorm and not self.synchronized
                and self.epsilon >= 1.001e-5)  # the kernel's smallest epsilon


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


def _cnn(head_names, num_classes, name):
    num_classes = errors.whole_number(num_classes, "num_classes", 2,
                                      "the reference CNN is a softmax classifier")
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
    model = keras_transfer.reference.source_cnn()
    ```
    """
    return _cnn(("Dense1", "Dense2"), num_classes, "fashion_mnist_cnn")


def target_cnn(num_classes=10):
    """The target CNN: the same feature layers, a new head `Dense1_1`, `Dense2_2`.

    Args:
        num_classes: the classes of the softmax output.

    Returns:
        A `keras.Sequential` on `(28, 28, 1)` inputs.

    Raises:
        ArgumentError: `num_classes` is not an int >= 2.

    Example:

    ```python
    model = keras_transfer.reference.target_cnn()
    ```
    """
    return _cnn(("Dense1_1", "Dense2_2"), num_classes, "mnist_cnn")
