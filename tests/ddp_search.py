"""A tiny ZODartsPP search on 1 or N CPU processes (run by tests/test_distributed.py; Lightning's DDP launcher
re-runs this script for ranks 1..N-1). Each rank saves its final alpha to ``OUT/alpha_rank{r}.pt``."""
import argparse
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nni.nas.evaluator.pytorch import Lightning, Trainer  # noqa: E402
from nni.nas.experiment import NasExperiment  # noqa: E402

from nni_zodarts import ZODartsDDP, ZODartsPP  # noqa: E402
from nni_zodarts.training import SearchModule  # noqa: E402
from spaces import TinySpace  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--devices', type=int, default=1)
    parser.add_argument('--batch-size', type=int, required=True, help='per process')
    parser.add_argument('--zo-mode', default='implicit')
    parser.add_argument('--epochs', type=int, default=1)
    parser.add_argument('--sequential', action='store_true', help='one process, data in file order (a control)')
    parser.add_argument('--out', type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    data = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 1, 8, 8, generator=data), torch.randint(0, 2, (64,), generator=data)
    # On N processes Lightning shards with DistributedSampler(shuffle=True, seed=PL_GLOBAL_SEED): rank r's k-th batch
    # holds items r, r+N, ... of the permutation's k-th slice of N * batch_size. One process with the same sampler
    # for a single replica gets that slice whole as its k-th batch: the same global batches.
    data = TensorDataset(x, y)
    sampler = lambda: (None if args.devices > 1 or args.sequential
                       else DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=0))
    loader = lambda: DataLoader(data, batch_size=args.batch_size, sampler=sampler())
    trainer = Trainer(max_epochs=args.epochs, accelerator='cpu', devices=args.devices,
                      strategy=ZODartsDDP() if args.devices > 1 else 'auto', logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)
    evaluator = Lightning(SearchModule(2, schedule_epochs=args.epochs), trainer, train_dataloaders=loader(), val_dataloaders=loader())
    strategy = ZODartsPP(arc_update_interval=2, size_search_start_epoch=0, temperature_interval=1,
                         zo_mode=args.zo_mode)
    experiment = NasExperiment(TinySpace(batch_norm=False), evaluator, strategy)
    experiment.config.experiment_working_directory = str(args.out / 'nni')
    experiment.run()
    module = strategy.oneshot_module
    rank = module.global_rank
    weights = {name: p.detach().clone() for name, p in module._names()[1].items()}
    torch.save({'alpha': {str(lab): a.detach().clone() for lab, a in module._alphas.items()}, 'weights': weights,
                'spread': module.alpha_rank_spread,
                'world_size': module.trainer.world_size}, args.out / f'alpha_rank{rank}.pt')


if __name__ == '__main__':
    main()
