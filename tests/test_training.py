"""nni_zodarts.training: the retraining schedule of spec §9."""
import math
import warnings

import pytest
import torch

from nni_zodarts.training import RetrainModule


def test_retraining_lr_warms_up_linearly_for_10_epochs_then_follows_a_cosine_to_zero():
    module = RetrainModule(torch.nn.Linear(2, 2), num_classes=2, task='multi-class', epochs=300)
    [opt], [scheduler] = module.configure_optimizers()
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')                # torch's note on stepping the scheduler before the optimizer
        for _ in range(300):
            lrs.append(opt.param_groups[0]['lr'])
            scheduler.step()
    assert lrs[0] == pytest.approx(0.001) and lrs[5] == pytest.approx(0.001 + 0.099 * 5 / 10)
    assert lrs[10] == pytest.approx(0.1)
    for epoch in (10, 100, 155, 250, 299):              # CosineAnnealingLR(T_max=290, eta_min=0) from epoch 10
        assert lrs[epoch] == pytest.approx(0.05 * (1 + math.cos(math.pi * (epoch - 10) / 290)), abs=1e-9)
