"""`rename=` recipes for checkpoints whose names another library chose.

`load_weights_by_name(model, path, rename=...)` maps the target's layer names
to the source's; where a regex cannot (a number that shifts), a function
does it. Each function here takes a target layer name and returns the
source's, or None for a name it does not map.
"""

import re

_RESNET = re.compile(r"stack(\d+)_block(\d+)_(\d)_(conv|bn)")


def torchvision_resnet(name):
    """KerasHub's `ResNetBackbone` layer name -> torchvision's (and timm's) module.

    torchvision counts its stages from 1 (`layer1`), KerasHub from 0
    (`stack0`); a block's shortcut is `downsample.0` (convolution) and
    `downsample.1` (BatchNorm) there, `..._0_conv` / `..._0_bn` here.

    Args:
        name: a layer name of KerasHub's ResNetBackbone (v1).

    Returns:
        The torchvision module path, or None.

    Example:

    ```python
    keras_transfer.renames.torchvision_resnet("stack0_block1_2_conv")  # 'layer1.1.conv2'
    keras_transfer.renames.torchvision_resnet("stack1_block0_0_bn")    # 'layer2.0.downsample.1'
    ```
    """
    if name in ("conv1_conv", "conv1_bn"):
        return {"conv1_conv": "conv1", "conv1_bn": "bn1"}[name]
    match = _RESNET.fullmatch(name)
    if match is None:
        return None
    stage, block, index, kind = int(match[1]) + 1, match[2], match[3], match[4]
    if index == "0":
        return f"layer{stage}.{block}.downsample.{0 if kind == 'conv' else 1}"
    return f"layer{stage}.{block}.{kind}{index}"
