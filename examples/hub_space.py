"""ZODartsPP on one of NNI's own model spaces: the DARTS cell space of ``nni.nas.hub.pytorch``, on BreastMNIST,
with a parameter budget. Any other hub space (ENAS, NASNet, AmoebaNet, PNAS, NasBench201, ProxylessNAS, ...)
drops in the same way.

    python examples/hub_space.py                      # 2 epochs on 256 images per half: about 3.5 min on 2 CPU cores
    python examples/hub_space.py --epochs 10 --max-samples 0 --budget 60000
"""
import argparse

import pytorch_lightning as pl
from nni.nas.evaluator.pytorch import Lightning, Trainer
from nni.nas.experiment import NasExperiment
from nni.nas.hub.pytorch import DARTS

from nni_zodarts import ZODartsPP
from nni_zodarts.data import load_medmnist, make_loader, search_split
from nni_zodarts.training import SearchModule

parser = argparse.ArgumentParser()
parser.add_argument('--data-root', default=None, help='folder with breastmnist.npz; default: the embedded BreastMNIST')
parser.add_argument('--epochs', type=int, default=2)
parser.add_argument('--max-samples', type=int, default=256, help='cap each search half (0: all images)')
parser.add_argument('--budget', type=int, default=30_000, help='upper bound on parameters')
args = parser.parse_args()


def space():
    # NNI's DARTS space at a small size: width 8 or 16, 3 or 6 cells. Its CIFAR stem takes 3 channels and its
    # head has 10 outputs; BreastMNIST's grey images are repeated to 3 channels and its labels are 0 and 1.
    return DARTS(width=(8, 16), num_cells=(3, 6), dataset='cifar')


pl.seed_everything(0)
data = load_medmnist('breastmnist', args.data_root)
(wx, wy), (ax, ay) = search_split(data, seed=0, max_samples=args.max_samples or None)
wx, ax = wx.expand(-1, 3, -1, -1), ax.expand(-1, 3, -1, -1)

evaluator = Lightning(SearchModule(num_classes=10, schedule_epochs=args.epochs),
                      Trainer(max_epochs=args.epochs, accelerator='auto', logger=False, enable_checkpointing=False),
                      train_dataloaders=make_loader(wx, wy, 32, train=True),
                      val_dataloaders=make_loader(ax, ay, 32, train=True))
strategy = ZODartsPP(param_budget=args.budget, size_search_start_epoch=args.epochs // 2, temperature_interval=1,
                     arc_update_interval=2)
experiment = NasExperiment(space(), evaluator, strategy)
experiment.run()
arch = experiment.export_top_models(formatter='dict')[0]
model = space().freeze(arch)
print('architecture:', arch)
print(f'parameters: {sum(p.numel() for p in model.parameters()):,} (budget {args.budget:,}); '
      f'E[params] at the end: {strategy.expected_params():,.0f}')
experiment.stop()
