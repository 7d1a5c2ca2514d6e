"""The reference pipeline: Fashion-MNIST source -> MNIST target, transfer vs. scratch.

One client of the library, kept apart from it: nothing in `keras_transfer`'s
core imports this package, and `import keras_transfer` loads none of it.

Modules: `datasets` (Fashion-MNIST and MNIST offline, TFDS targets, the
`tf.data` pipelines), `reference` (the CNN with named layers), `comparison`
(the transfer and scratch arms, their plots and tables) and `_cli` (what the
absl scripts in `scripts/` share).
"""
