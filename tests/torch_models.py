"""PyTorch modules the tests build and save themselves: torch writes the fixtures."""

import numpy as np
import torch

from keras_transfer import renames


class SmallCnn(torch.nn.Module):
    """The layouts a CNN has: a convolution, BatchNorm, a depthwise and a
    pointwise convolution, a transposed one, and a Linear after a flatten."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.dw = torch.nn.Conv2d(8, 16, 3, padding=1, groups=8)  # depth multiplier 2
        self.pw = torch.nn.Conv2d(16, 12, 1)
        self.up = torch.nn.ConvTranspose2d(12, 6, 2, stride=2)
        self.fc = torch.nn.Linear(6 * 16 * 16, 5)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.pw(self.dw(x)))
        return self.fc(torch.flatten(self.up(x), 1))


class SmallText(torch.nn.Module):
    """An embedding, a Linear read by an EinsumDense (one output per head),
    a LayerNorm, and a Conv1d over the sequence."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(20, 8)
        self.proj = torch.nn.Linear(8, 2 * 6)
        self.norm = torch.nn.LayerNorm(12)
        self.conv = torch.nn.Conv1d(12, 4, 3, padding=1)

    def forward(self, ids):
        x = self.norm(self.proj(self.embed(ids)))
        return self.conv(x.transpose(1, 2)).transpose(1, 2)


class BasicBlock(torch.nn.Module):
    """torchvision's ResNet BasicBlock, with its key names."""

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(planes)
        self.relu = torch.nn.ReLU(inplace=True)
        self.conv2 = torch.nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = torch.nn.Sequential(
                torch.nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                torch.nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(torch.nn.Module):
    """torchvision's (and timm's) ResNet Bottleneck, with its key names."""

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(planes)
        self.conv2 = torch.nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(planes)
        self.conv3 = torch.nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = torch.nn.BatchNorm2d(planes * 4)
        self.relu = torch.nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = torch.nn.Sequential(
                torch.nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                torch.nn.BatchNorm2d(planes * 4))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet18(torch.nn.Module):
    """torchvision's resnet18, written out: the same modules and state_dict keys
    (conv1, bn1, layer1.0.conv1, ..., layer2.0.downsample.0, fc). timm's
    resnet18 has the same keys."""

    block, blocks, expansion = BasicBlock, (2, 2, 2, 2), 1

    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(64)
        self.relu = torch.nn.ReLU(inplace=True)
        self.maxpool = torch.nn.MaxPool2d(3, 2, 1)
        inplanes = 64
        for i, (planes, count) in enumerate(zip((64, 128, 256, 512), self.blocks)):
            stride = 1 if i == 0 else 2
            stage = [self.block(inplanes, planes, stride)]
            inplanes = planes * self.expansion
            stage += [self.block(inplanes, planes) for _ in range(count - 1)]
            setattr(self, f"layer{i + 1}", torch.nn.Sequential(*stage))
        self.avgpool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(512 * self.expansion, num_classes)

    def features(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return x

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


class ResNet50(ResNet18):
    """torchvision's and timm's resnet50: the same modules and state_dict keys."""

    block, blocks, expansion = Bottleneck, (3, 4, 6, 3), 4


def randomize(module, seed=0):
    """Random weights and BatchNorm statistics, so that a misplaced array shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.dtype.is_floating_point:
                values = torch.randn(tensor.shape, generator=generator)
                if tensor.ndim > 1:  # He-scaled, so that activations stay near 1
                    values = values * (2.0 / (tensor[0].numel())) ** 0.5
                else:
                    values = values * 0.1
                if name.endswith("running_var"):
                    values = values.abs() + 0.5
                elif name.endswith(".weight") and tensor.ndim == 1:
                    values = values + 1.0
                tensor.copy_(values)
    return module.eval()


def torchvision_resnet_names(name):
    """KerasHub's ResNetBackbone layer name -> torchvision's module path."""
    return renames.torchvision_resnet(name)


def outputs(module, images_nhwc, method="forward"):
    """The module's outputs on NHWC numpy images, back in NHWC."""
    with torch.no_grad():
        out = getattr(module, method)(torch.from_numpy(images_nhwc.transpose(0, 3, 1, 2)))
    out = out.numpy()
    return out.transpose(0, 2, 3, 1) if out.ndim == 4 else out
