"""Per-class recall of the reported weights on the validation and the test split: which images the honest test
accuracy loses, and how much of the loss a change of class shares between the two splits explains.

    python -m benchmarks.per_class --data-root ../shared/data/medmnist      # after benchmarks.reproduce

For every finished reproduction run it loads ``retrain/model.pt`` (the validation-selected weights) and predicts
both splits; nothing is retrained. "ACC at val's class shares" weights each class's test recall by its share of
the validation split: what the test ACC would be if only the class shares differed between the splits.
"""
from __future__ import annotations

import pandas as pd
import torch
from medmnist import INFO
from torch import nn

from nni_zodarts.data import make_loader

from .finished import parse_arguments, reported_models


def recalls(predictions: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Per class, the share of its images predicted as it (NaN for a class without images)."""
    hits = torch.bincount(labels[predictions == labels], minlength=n_classes).double()
    return hits / torch.bincount(labels, minlength=n_classes).double()


def shares(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    return torch.bincount(labels, minlength=n_classes).double() / len(labels)


def accuracy_at(recall: torch.Tensor, class_shares: torch.Tensor) -> float:
    """ACC on a split with these class shares and these per-class recalls (with the split's own shares: its ACC)."""
    return float((recall * class_shares).nansum())


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x).argmax(1) for x, _ in make_loader(images, labels, 512, train=False)])


def main() -> None:
    args = parse_arguments(__doc__)
    rows, classes = [], {}
    for r, folder, model, d in reported_models(args.runs, args.results, args.data_root, args.seeds):
        if r.dataset not in classes:
            classes[r.dataset] = (list(INFO[r.dataset]['label'].values()),
                                  {s: shares(d.splits[s][1], d.n_classes) for s in ('val', 'test')})
        names, split_shares = classes[r.dataset]
        for split in ('val', 'test'):
            images, labels = d.splits[split]
            predictions = predict(model, images, labels)
            recall = recalls(predictions, labels, d.n_classes)
            rows.append({'dataset': r.dataset, 'job': folder.parent.name, 'seed': r.seed, 'split': split,
                         'ACC': float((predictions == labels).double().mean()),
                         "ACC at val's class shares": accuracy_at(recall, split_shares['val']),
                         **{f'recall: {name}': float(x) for name, x in zip(names, recall)}})
    if not rows:
        raise SystemExit(f'no finished run with a model.pt under {args.runs}: run benchmarks.reproduce first')
    frame = pd.DataFrame(rows)
    for dataset, runs in frame.groupby('dataset'):
        names, split_shares = classes[dataset]
        columns = ['ACC', "ACC at val's class shares", *(f'recall: {n}' for n in names)]
        print(f'\n{dataset}, class shares (val / test): ' + ', '.join(
            f'{n} {100 * split_shares["val"][i]:.1f}% / {100 * split_shares["test"][i]:.1f}%'
            for i, n in enumerate(names)))
        print('\n| job | seeds | split | ' + ' | '.join(columns) + ' |\n|' + '---|' * (len(columns) + 3))
        table = runs.groupby(['job', 'split'], sort=False).agg(seeds=('seed', 'count'),
                                                                **{c: (c, 'mean') for c in columns})
        for (job, split), t in table.iterrows():
            print(f'| {job} | {t.seeds:.0f} | {split} | ' + ' | '.join(f'{t[c]:.3f}' for c in columns) + ' |')


if __name__ == '__main__':
    main()
