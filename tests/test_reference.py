import pytest

import keras_transfer as kt
from keras_transfer import reference


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
