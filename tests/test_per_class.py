"""benchmarks.per_class: per-class recall, and the ACC a split would have with another split's class shares."""
import math

import torch

from benchmarks.per_class import accuracy_at, predict, recalls, shares


def test_recall_counts_each_class_own_images_and_reweighting_to_own_shares_gives_acc():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    predictions = torch.tensor([0, 1, 0, 1, 1, 0])
    recall = recalls(predictions, labels, 4)
    assert torch.allclose(recall[:3], torch.tensor([2 / 3, 1.0, 0.0], dtype=torch.double)) and math.isnan(recall[3])
    acc = float((predictions == labels).double().mean())
    assert math.isclose(accuracy_at(recall, shares(labels, 4)), acc)
    assert math.isclose(accuracy_at(recall, torch.tensor([0.0, 1.0, 0.0, 0.0])), 1.0)   # only class 1: all right


def test_predict_keeps_image_order_across_batches():
    values = torch.arange(1100) % 256
    images = values.to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).contiguous()

    class Bright(torch.nn.Module):                  # class 1 for images brighter than mid-grey
        def forward(self, x):
            m = x.flatten(1).mean(1)
            return torch.stack([-m, m], 1)

    assert torch.equal(predict(Bright(), images, torch.zeros(1100, dtype=torch.long)), (values > 127).long())
