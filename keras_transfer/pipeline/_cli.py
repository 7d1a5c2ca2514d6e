"""Private helpers shared by the absl scripts in `scripts/`."""

import sys

import keras
from absl import flags

from keras_transfer import errors


def make_deterministic(seed):
    """Seeds Python, NumPy and the backend, and turns on TensorFlow's op determinism.

    Returns:
        Whether TensorFlow's op determinism is on now (the scripts record it in
        results.json).
    """
    # TensorFlow runs the scripts' tf.data pipelines on every backend; imported
    # here so that importing the package on JAX or PyTorch does not load it.
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    # TensorFlow exports the setter but not the getter; the pipeline tests
    # fail if the getter goes.
    return tf_config.is_op_determinism_enabled()


def main_for(run, prog):
    """Wraps `run()` as an absl `main(argv)`: bad input gives one line, exit 1.

    A `TransferError` (a missing or tampered file, a bad data folder, ...) is
    printed as `<prog>: error: <message>` on stderr, with no traceback unless
    `--verbosity` is 1 or more.
    """

    def main(argv):
        del argv
        try:
            return run()
        except errors.TransferError as e:
            if flags.FLAGS.verbosity > 0:
                raise
            print(f"{prog}: error: {e}", file=sys.stderr)
            return 1

    return main
