"""The MedMNIST v2 ResNet-18 (28) baseline: torchvision's ResNet-18 with a 3x3 stride-1 stem and no max-pool, so
28x28 images keep a 28x28 first feature map. A space with a single architecture (``{}``), so that ``retrain``,
export and deployment treat it like any searched model."""
from __future__ import annotations

from torch import nn
from torchvision.models import resnet18
from nni.nas.nn.pytorch import ModelSpace


class ResNet18Space(ModelSpace):
    def __init__(self, in_channels: int = 1, num_classes: int = 2, track_running_stats: bool = True):
        # track_running_stats: accepted like the searched spaces' (retraining passes it); torchvision's BN tracks.
        super().__init__()
        self.net = resnet18(num_classes=num_classes)
        self.net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.net.maxpool = nn.Identity()

    def forward(self, x):
        return self.net(x)
