"""TwoPhaseSchedule(lora_rank=...) on transformers: every layer with Keras'
`enable_lora` gets adapters (Embedding's are `lora_embeddings_*`), and phase 2
trains them and the head only, as plain Keras does by hand; a checkpoint
holds them merged, so a model without LoRA loads it."""

import keras
import keras_hub
import numpy as np
import pytest

import keras_transfer as kt
from keras_transfer import _layers

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def bert_classifier():
    backbone = keras_hub.models.BertBackbone(vocabulary_size=50, num_layers=2, num_heads=2,
                                             hidden_dim=16, intermediate_dim=32,
                                             max_sequence_length=16)
    return keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=2,
                                               preprocessor=None)


def keras_transformer():
    """A transformer block from Keras' own layers: MultiHeadAttention's
    EinsumDense projections, LayerNormalization, a Dense feed-forward."""
    ids = keras.Input((16,), dtype="int32")
    x = keras.layers.Embedding(50, 16, name="embed")(ids)
    attended = keras.layers.MultiHeadAttention(2, 8, name="attention")(x, x)
    x = keras.layers.LayerNormalization(name="norm_1")(x + attended)
    x = keras.layers.LayerNormalization(name="norm_2")(
        x + keras.layers.Dense(16, name="ffn")(x))
    base = keras.Model(ids, x, name="encoder")
    inputs = keras.Input((16,), dtype="int32")
    pooled = keras.layers.GlobalAveragePooling1D()(base(inputs))
    return keras.Model(inputs, keras.layers.Dense(2, name="logits")(pooled)), base


def tokens(n=32, seed=0):
    ids = np.random.default_rng(seed).integers(0, 50, (n, 16))
    return ids, (ids[:, 0] > 25).astype("int32")


def bert_data():
    ids, y = tokens()
    return {"token_ids": ids, "segment_ids": np.zeros_like(ids),
            "padding_mask": np.ones_like(ids)}, y


def values(variables):
    return {v.path: keras.ops.convert_to_numpy(v).copy() for v in variables}


@pytest.mark.parametrize("make", ["bert", "keras"])
def test_phase_two_trains_the_adapters_and_the_head_only(make):
    if make == "bert":
        model = bert_classifier()
        base, (x, y) = model.backbone, bert_data()
    else:
        model, base = keras_transformer()
        x, y = tokens()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=LOSS)
    schedule = kt.TwoPhaseSchedule(freeze=[base], switch_epoch=1, head_lr=1e-2,
                                   finetune_lr=1e-2, lora_rank=2, verbose=0)
    snapshots = {}

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                snapshots["switch"] = values(self.model.weights)

    model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[schedule, Snapshot()])
    end = values(model.weights)
    adapters = {v.path for l in _layers.with_sublayers(base) for v in _layers.lora_adapters(l)}
    if make == "bert":  # Embedding's adapters are its own, not `lora_kernel_*`
        assert "token_embedding/lora_embeddings_a" in adapters
    else:
        assert {"attention/query/lora_kernel_a", "embed/lora_embeddings_b"} <= adapters
    originals = [v.path for v in base.weights if v.path not in adapters]
    # every original kernel, embedding, bias and normalization weight of the
    # base is bit-identical through phase 2
    for path in originals:
        np.testing.assert_array_equal(end[path], snapshots["switch"][path], err_msg=path)
    assert all(not np.array_equal(end[p], snapshots["switch"][p]) for p in adapters
               if p.endswith("_b"))  # the b adapters start at 0 and move
    head = [v.path for v in model.weights if v.path.split("/")[0] == "logits"]
    assert all(not np.array_equal(end[p], snapshots["switch"][p]) for p in head)


def test_it_matches_plain_keras_training_the_adapters_by_hand():
    keras.utils.set_random_seed(1)
    (ours, base), (mine, mine_base) = keras_transformer(), keras_transformer()
    for model_base in (base, mine_base):
        for layer in _layers.with_sublayers(model_base):
            if _layers.supports_lora(layer):
                layer.enable_lora(2)
    mine.set_weights(ours.get_weights())  # the same start, adapters included
    # by hand: Keras' enable_lora leaves biases trainable; the adapters and the
    # head are all that train in the PEFT default ours follows
    for layer in _layers.with_sublayers(mine.get_layer("encoder")):
        layer.trainable = True
    for v in mine.get_layer("encoder").weights:
        v.trainable = "lora_" in v.name
    mine.compile(optimizer=keras.optimizers.Adam(1e-2), loss=LOSS)
    ours.compile(optimizer=keras.optimizers.Adam(1e-2), loss=LOSS)
    x, y = tokens()
    mine.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    ours.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0, callbacks=[
        kt.TwoPhaseSchedule(freeze=[base], switch_epoch=0, finetune_lr=1e-2, lora_rank=2,
                            verbose=0)])
    trained = {v.path for v in mine.trainable_weights}
    assert any("lora_embeddings" in p for p in trained) and not any(
        p.endswith("/bias") and p.startswith("attention") for p in trained)
    for a, b in zip(ours.weights, mine.weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b),
                                   rtol=1e-5, atol=1e-6, err_msg=a.path)


@pytest.mark.once  # the summary is structure; that every original weight of a BERT
# stays put in phase 2 is checked on JAX in test_phase_two_trains_the_adapters_and_the_head_only
def test_layers_without_enable_lora_are_listed_and_stay_frozen():
    model = bert_classifier()
    model.compile(optimizer="adam", loss=LOSS)
    schedule = kt.TwoPhaseSchedule(freeze=[model.backbone], switch_epoch=0, lora_rank=2,
                                   verbose=0)
    x, y = bert_data()
    before = values(model.backbone.get_layer("position_embedding").weights)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[schedule])
    summary = schedule.lora_summary
    assert "position_embedding" in summary["frozen"]  # KerasHub's PositionEmbedding
    assert "embeddings_layer_norm" in summary["frozen"]
    assert {"token_embedding", "segment_embedding", "query", "pooled_dense"} <= set(
        summary["adapted"])
    after = values(model.backbone.get_layer("position_embedding").weights)
    for path, value in before.items():
        np.testing.assert_array_equal(after[path], value)


@pytest.mark.once  # which optimizer of MultiOptimizer holds a variable is decided
# before any step, the same on every backend; discriminative rates step on JAX in test_optimizers
def test_adapters_train_in_their_layers_group():
    model = bert_classifier()
    groups = kt.layer_groups(model, [model.backbone])
    optimizer = kt.discriminative_optimizer(model, groups, 1e-2, decay=0.5)
    model.compile(optimizer=optimizer, loss=LOSS)
    x, y = bert_data()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[
        kt.TwoPhaseSchedule(freeze=[model.backbone], switch_epoch=0, lora_rank=2,
                            finetune_lr=1e-2, verbose=0)])
    # Going around Keras as DiscriminativeOptimizer does: MultiOptimizer's
    # variable -> group map is private (pinned in tests/test_keras_gaps.py).
    mapping = model.optimizer._optimizer_map  # noqa: SLF001
    group_of = {name: f"group_{i}" for i, group in enumerate(groups) for name in group}
    checked = 0
    for v in model.weights:
        if "lora_" in v.name:
            top = v.path.split("/")[0]
            assert mapping[v.path].name == group_of[top], v.path
            checked += 1
    assert checked == 30


@pytest.mark.once  # merging is arithmetic on arrays and the file is HDF5: backend-independent
def test_a_checkpoint_holds_the_adapters_merged_for_a_model_without_lora(tmp_path):
    model, base = keras_transformer()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=LOSS)
    x, y = tokens()
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[
        kt.TwoPhaseSchedule(freeze=[base], switch_epoch=0, lora_rank=2, finetune_lr=1e-2,
                            verbose=0)])
    kt.save_weights_by_name(model, tmp_path / "lora.h5")
    plain, _ = keras_transformer()  # no LoRA: kernels only
    report = kt.load_weights_by_name(plain, tmp_path / "lora.h5")
    assert report.missing == () and report.unused == ()
    expected = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(plain(x)), expected, rtol=1e-5,
                               atol=1e-6)
    assert kt.transfer_weights(model, keras_transformer()[0]).missing == ()
    # and a model with LoRA loads it too: the merged kernels, its b adapters at zero
    again, again_base = keras_transformer()
    for layer in _layers.with_sublayers(again_base):
        if _layers.supports_lora(layer):
            layer.enable_lora(2)
    kt.load_weights_by_name(again, tmp_path / "lora.h5")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again(x)), expected, rtol=1e-5,
                               atol=1e-6)
