"""kt.layer_groups: groups that follow real architectures (transformer blocks,
CNN stages), and GradualUnfreezing on them (ULMFiT on a BERT)."""

import keras
import keras_hub
import numpy as np
import pytest

import keras_transfer as kt
from keras_transfer.pipeline import reference


def bert(num_layers=3):
    return keras_hub.models.BertBackbone(vocabulary_size=50, num_layers=num_layers, num_heads=2,
                                         hidden_dim=16, intermediate_dim=32,
                                         max_sequence_length=16)


@pytest.mark.once  # the model's structure only; GradualUnfreezing runs on JAX in test_schedules
def test_a_transformer_stack_is_its_embeddings_then_one_group_per_block():
    backbone = bert()
    assert kt.layer_groups(backbone, None) == [
        ["token_embedding", "position_embedding", "segment_embedding", "embeddings_layer_norm"],
        ["transformer_layer_0"], ["transformer_layer_1"],
        ["transformer_layer_2", "pooled_dense"]]
    classifier = keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=2,
                                                     preprocessor=None)
    # the base nested in a task model, named as fine_tune's freeze= takes it
    assert kt.layer_groups(classifier, [backbone]) == kt.layer_groups(backbone, None)


@pytest.mark.parametrize("make, first, sizes", [
    # keras.applications: a stem, then one group per stage (conv2_x ... conv5_x)
    (lambda: keras.applications.ResNet50(weights=None, include_top=False,
                                         input_shape=(64, 64, 3)),
     ["conv1_conv", "conv1_bn"], [2, 20, 26, 38, 20]),
    # the same with an input of unknown size: the stage names tell
    (lambda: keras.applications.ResNet50(weights=None, include_top=False),
     ["conv1_conv", "conv1_bn"], [2, 20, 26, 38, 20]),
    # KerasHub's ResNet, sizes unknown: its `stackN_` names
    (lambda: keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 32], stackwise_num_blocks=[2, 2],
        stackwise_num_strides=[1, 2], block_type="basic_block", use_pre_activation=False),
     ["conv1_conv", "conv1_bn"], [2, 8, 10]),
    # the reference CNN: one group per resolution, as before
    (lambda: reference.target_cnn(), ["Conv1", "Bn1"], [2, 2, 2]),
])
@pytest.mark.once  # the model's structure only; GradualUnfreezing runs on JAX in test_schedules
def test_a_cnn_is_one_group_per_stage(make, first, sizes):
    model = make()
    base = 12 if model.name == "mnist_cnn" else None
    groups = kt.layer_groups(model, base)
    assert groups[0] == first and [len(g) for g in groups] == sizes


@pytest.mark.once  # the model's structure only; GradualUnfreezing runs on JAX in test_schedules
def test_a_plain_stack_is_at_most_three_groups_of_layers_with_kernels():
    deep = keras.Sequential([keras.Input((4,))] + [keras.layers.Dense(4, name=f"D{i}")
                                                   for i in range(7)], name="deep")
    outer = keras.Sequential([keras.Input((4,)), deep, keras.layers.Dense(2, name="Out")])
    assert kt.layer_groups(outer, [deep]) == [["D0", "D1", "D2"], ["D3", "D4"], ["D5", "D6"]]
    assert kt.layer_groups(outer, [deep], max_groups=7) == [[f"D{i}"] for i in range(7)]


def _tokens(n=32, seed=0):
    ids = np.random.default_rng(seed).integers(0, 50, (n, 16))
    x = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": np.ones_like(ids)}
    return x, (ids[:, 0] > 25).astype("int32")


# TensorFlow pass only: which groups a BERT has is structure, and GradualUnfreezing
# thaws its blocks on JAX in test_schedules; recompiling a BERT at each of the
# four epochs took 114 s of the JAX pass.
@pytest.mark.once
def test_gradual_unfreezing_thaws_a_bert_one_transformer_layer_per_epoch():
    # ULMFiT on a BERT: the head first, then the top block, then the next...
    # compared with the trainable sets Keras holds at each epoch, and with
    # which weights moved.
    backbone = bert(num_layers=2)
    model = keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=2,
                                                preprocessor=None)
    groups = kt.layer_groups(model, [backbone])
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    trained = []

    class Watch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.before = {v.path: keras.ops.convert_to_numpy(v).copy()
                           for v in self.model.weights}

        def on_epoch_end(self, epoch, logs=None):
            trained.append({p.split("/")[0] for p, value in self.before.items()
                            if not np.array_equal(value, keras.ops.convert_to_numpy(
                                next(v for v in self.model.weights if v.path == p)))})

    schedule = kt.GradualUnfreezing(base=[backbone], start_epoch=1, verbose=0)
    x, y = _tokens()
    history = model.fit(x, y, epochs=4, batch_size=16, verbose=0,
                        callbacks=[schedule, Watch()])
    assert schedule.blocks == groups
    assert history.history["unfrozen_blocks"] == [0, 1, 2, 3]
    top = {"logits"}
    assert trained[0] == top
    assert trained[1] == top | {"transformer_layer_1", "pooled_dense"}
    assert trained[2] == trained[1] | {"transformer_layer_0"}
    assert trained[3] >= trained[2] | {"token_embedding", "segment_embedding",
                                       "embeddings_layer_norm"}


@pytest.mark.once  # the model's structure only; GradualUnfreezing runs on JAX in test_schedules
def test_gradual_unfreezing_needs_blocks_or_a_base():
    with pytest.raises(kt.ArgumentError, match="one of the two"):
        kt.GradualUnfreezing()
    with pytest.raises(kt.ArgumentError, match="one of the two"):
        kt.GradualUnfreezing([["a"]], base=["b"])
