"""benchmarks.batch_statistics: the authors' evaluation (BN on each test batch's statistics) against ours."""
import torch
from torch import nn

from benchmarks.batch_statistics import accuracy
from nni_zodarts.data import load_medmnist


def test_running_statistics_fix_the_predictions_and_test_batches_normalise_themselves():
    images, labels = load_medmnist('breastmnist').splits['test']
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 2), nn.BatchNorm1d(2))
    model[2].running_mean.copy_(torch.tensor([-100.0, 100.0]))     # running statistics: every image is class 0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    share_of_class_0 = float((labels == 0).double().mean())

    for batch in (16, 156):                     # running statistics: the batch does not matter
        assert accuracy(model, images, labels, 'binary-class', batch, batch_statistics=False) == share_of_class_0
    by_batch = accuracy(model, images, labels, 'binary-class', 16, batch_statistics=True)
    assert abs(by_batch - share_of_class_0) > 0.1    # each batch centred on itself: both classes are predicted
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())   # the model is left as it was
