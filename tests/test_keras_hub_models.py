"""fine_tune and TwoPhaseSchedule on KerasHub task models (an image
classifier with a ResNet backbone, a BERT text classifier), on every backend
the suite covers: the backbone trains only in phase 2, the head in both."""

import keras
import keras_hub
import numpy as np
import pytest

import keras_transfer as kt

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def image_classifier():
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 16],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=(32, 32, 3))
    model = keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=3,
                                                   preprocessor=None)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (32, 32, 32, 3)).astype("float32")
    return model, backbone, (x, (x[:, :16].mean((1, 2, 3)) > 0.5).astype("int32"))


def text_classifier():
    backbone = keras_hub.models.BertBackbone(vocabulary_size=50, num_layers=2, num_heads=2,
                                             hidden_dim=16, intermediate_dim=32,
                                             max_sequence_length=16)
    model = keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=2,
                                                preprocessor=None)
    ids = np.random.default_rng(0).integers(0, 50, (32, 16))
    x = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": np.ones_like(ids)}
    return model, backbone, (x, (ids[:, 0] > 25).astype("int32"))


class Snapshots(keras.callbacks.Callback):
    """The backbone's weights at each epoch's start, and at the end."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone, self.seen = backbone, []

    def take(self):
        self.seen.append([keras.ops.convert_to_numpy(v).copy() for v in self.backbone.weights])

    def on_epoch_begin(self, epoch, logs=None):
        self.take()

    def on_train_end(self, logs=None):
        self.take()


def moved(before, after):
    return sum(not np.array_equal(a, b) for a, b in zip(before, after))  # how many changed


# On JAX, BERT trains in two phases through TwoPhaseSchedule; fine_tune adds
# its one-cycle rates per group (base_lr is given here), which run on JAX in
# tests/test_recipes.py (BERT compiles for most of a minute on JAX each way, so
# fine_tune on BERT runs in the TensorFlow pass only).
CASES = [pytest.param(make, way, id=f"{way}-{make.__name__}",
                      marks=pytest.mark.once if (way, make) == ("fine_tune", text_classifier) else ())
         for way in ("fine_tune", "TwoPhaseSchedule") for make in (image_classifier, text_classifier)]


@pytest.mark.parametrize("make, way", CASES)
def test_the_backbone_trains_in_phase_two_only(make, way):
    model, backbone, (x, y) = make()
    snapshots = Snapshots(backbone)
    if way == "fine_tune":
        history = kt.fine_tune(model, (x, y), freeze=[backbone], epochs=3, base_lr=1e-3,
                               train_batchnorm=False, batch_size=16, loss=LOSS, metrics=(),
                               callbacks=[snapshots], verbose=0)
    else:
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=LOSS)
        history = model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[
            kt.TwoPhaseSchedule(freeze=[backbone], switch_epoch=1, verbose=0), snapshots])
    assert history.history["phase"] == [1, 2, 2]
    start, switch, _, end = snapshots.seen
    assert moved(start, switch) == 0  # phase 1: the backbone as loaded, statistics too
    # phase 2 trains every kernel and embedding; BatchNormalization stays
    # frozen with its statistics (train_batchnorm=False; the schedule's default)
    for v, before, after in zip(backbone.weights, switch, end):
        name = v.path.rsplit("/", 1)[-1]
        if name in ("kernel", "embeddings"):
            assert not np.array_equal(before, after), v.path
        if name in ("moving_mean", "moving_variance"):
            np.testing.assert_array_equal(before, after, err_msg=v.path)
