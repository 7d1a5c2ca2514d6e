"""Layers keras_transfer adds to Keras.

`FusedBatchNormalization`: Keras' BatchNormalization with TensorFlow's fused
kernel in training. It is registered with Keras' serialization under
`keras_transfer>FusedBatchNormalization` when this module is imported (which
`import keras_transfer` does), so a `.keras` file naming it loads, including
files written while the class lived in the reference pipeline's module.
"""

import keras


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
    `tests/test_layers.py` compares it with Keras' layer, and fails when
    Keras' BatchNormalization takes a `fused` argument again.

    Example:

    ```python
    bn = keras_transfer.layers.FusedBatchNormalization(momentum=0.9, name="Bn1")
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
