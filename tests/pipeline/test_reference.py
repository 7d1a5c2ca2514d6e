import pytest

import keras_transfer as kt
from keras_transfer.pipeline import reference


def test_the_reference_cnns_share_the_feature_layers_by_name():
    source, target = reference.source_cnn(), reference.target_cnn(num_classes=5)
    names = [layer.name for layer in source.layers]
    assert names[:12] == list(reference.FEATURE_LAYERS)
    assert [layer.name for layer in target.layers][:12] == names[:12]
    assert target.output_shape == (None, 5)


@pytest.mark.parametrize("num_classes", [1, 0, 2.5, True])
def test_a_bad_class_count_is_a_transfer_error_and_a_value_error(num_classes):
    with pytest.raises(ValueError, match="num_classes must be an int >= 2") as err:
        reference.target_cnn(num_classes=num_classes)
    assert isinstance(err.value, kt.ArgumentError)


@pytest.mark.once  # the class registry is backend-independent; on JAX the reference
# CNN saves and loads in-process in test_the_reference_cnn_saves_and_loads_with_its_batchnorm_class
def test_a_saved_reference_cnn_loads_after_a_plain_import_keras_transfer(tmp_path):
    # load_model finds the registered class once keras_transfer is imported
    # (in a fresh process, where nothing imported keras_transfer.pipeline).
    import subprocess
    import sys

    reference.target_cnn().save(tmp_path / "cnn.keras")
    code = ("import keras, keras_transfer; "
            f"m = keras.saving.load_model({str(tmp_path / 'cnn.keras')!r}); "
            "print(type(m.get_layer('Bn1')).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().splitlines()[-1] == "FusedBatchNormalization"


def test_the_reference_cnn_saves_and_loads_with_its_batchnorm_class(tmp_path):
    import keras
    import numpy as np

    model = reference.target_cnn()
    model.save(tmp_path / "cnn.keras")
    loaded = keras.saving.load_model(tmp_path / "cnn.keras")
    assert [type(l).__name__ for l in loaded.layers if "Bn" in l.name] == \
        ["FusedBatchNormalization"] * 3
    x = np.random.default_rng(0).random((2, 28, 28, 1)).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded.predict(x, verbose=0)),
                                  keras.ops.convert_to_numpy(model.predict(x, verbose=0)))
