"""ZO-DARTS++ through NNI's own Python API: NasExperiment + ZODartsPP on MedMNIST (no CLI).

    python examples/nas_experiment_medmnist.py --dataset breastmnist --epochs 6
    python examples/nas_experiment_medmnist.py --dataset pneumoniamnist --data-root ../shared/data/medmnist
"""
import argparse

import pytorch_lightning as pl
from nni.nas.evaluator.pytorch import Lightning, Trainer
from nni.nas.experiment import NasExperiment

from nni_zodarts import ZODartsPP
from nni_zodarts.data import load_medmnist, make_loader, search_split
from nni_zodarts.training import SearchModule
from search_spaces import SizeVariableSpace

parser = argparse.ArgumentParser()
parser.add_argument('--dataset', default='breastmnist')
parser.add_argument('--data-root', default=None, help='folder with <flag>.npz; default: the embedded BreastMNIST')
parser.add_argument('--epochs', type=int, default=6)
parser.add_argument('--budget', type=int, default=400_000, help='upper bound on parameters')
args = parser.parse_args()

pl.seed_everything(0)
data = load_medmnist(args.dataset, args.data_root)
(wx, wy), (ax, ay) = search_split(data, seed=0)            # official train+val, halved: weights / architecture

space = SizeVariableSpace(in_channels=data.n_channels, num_classes=data.n_classes)
evaluator = Lightning(SearchModule(data.n_classes, schedule_epochs=args.epochs),
                      Trainer(max_epochs=args.epochs, accelerator='auto', logger=False, enable_checkpointing=False),
                      train_dataloaders=make_loader(wx, wy, 16, train=True),
                      val_dataloaders=make_loader(ax, ay, 16, train=True))
strategy = ZODartsPP(param_budget=args.budget, size_search_start_epoch=args.epochs // 2, temperature_interval=1,
                     arc_update_interval=5)

experiment = NasExperiment(space, evaluator, strategy)
experiment.run()
arch = experiment.export_top_models(formatter='dict')[0]
model = SizeVariableSpace(in_channels=data.n_channels, num_classes=data.n_classes).freeze(arch)
print('architecture:', arch)
print(f'parameters: {sum(p.numel() for p in model.parameters()):,} (budget {args.budget:,}); '
      f'E[params] at the end: {strategy.expected_params():,.0f}')
experiment.stop()
