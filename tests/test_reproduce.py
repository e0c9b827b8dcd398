"""The reproduction harness end to end at toy size: every method, the CSV, resume-by-skipping, derived budgets."""
import argparse
import contextlib
import io
import json
import shutil

import pandas as pd
import pytest
import torch

from benchmarks.batch_statistics import accuracy
from benchmarks.finished import reported_models
from benchmarks.reproduce import (COLUMNS, DERIVED_BUDGETS, PAPER_BUDGETS, _same_settings, budget_window,
                                  derive_budgets, main as reproduce, missing_runs, parse_args, random_architecture,
                                  share_search_prefix, summarise, target_lines)
from benchmarks.selection import read_runs
from nni_zodarts.retrain import build_model
from nni_zodarts.search import sample_architecture
from search_spaces import create_space, dead_cells, prune_dead_edges
from test_reliability import final_alpha

def _reproduce(tmp_path, *extra) -> str:
    """The harness in this process (each run it starts is a subprocess, as always): what it printed."""
    argv = ['--seeds', '0', '--preset', 'demo', '--search-epochs', '1', '--retrain-epochs', '1', '--max-samples', '48',
            '--accelerator', 'cpu', '--runs', str(tmp_path / 'runs'), '--results', str(tmp_path / 'results'), *extra]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        reproduce(argv)
    return printed.getvalue()


def test_every_method_appends_one_row_and_a_rerun_skips_it(tmp_path):
    _reproduce(tmp_path, '--jobs', 'zodartspp', 'darts', 'resnet18', 'random')
    csv = tmp_path / 'results' / 'reproduction.csv'
    rows = pd.read_csv(csv, keep_default_na=False)
    assert list(rows.columns) == COLUMNS
    assert rows['method'].tolist() == ['zodartspp', 'darts', 'resnet18', 'random'] and (rows['budget'] == '').all()
    assert rows['test_acc'].between(0, 1).all() and rows['test_auc'].between(0, 1).all()
    assert (rows['retrain_epochs'] == 1).all() and (rows['search_seconds'][:2] > 0).all()
    resnet = build_model({}, 'resnet18', {'in_channels': 1, 'num_classes': 2})
    assert rows['params'].iloc[2] == sum(p.numel() for p in resnet.parameters())
    drawn = json.loads((tmp_path / 'runs' / 'breastmnist' / 'random' / 'seed0' / 'search' / 'architecture.json').read_text())
    assert drawn == random_architecture(0) != random_architecture(1)
    assert rows['params'].iloc[3] == sum(p.numel() for p in build_model(drawn, 'size_variable', {}).parameters())

    # the reported test ACC (selected checkpoint, reloaded and tested) is the one logged at its epoch
    assert read_runs(tmp_path / 'runs', csv)['val ACC (the table)'].tolist() == rows['test_acc'].tolist()
    # ... and the weights it reports, rebuilt in a fresh network (what per_class and batch_statistics read), test so
    reported = list(reported_models(tmp_path / 'runs', csv, None))
    assert [row.method for row, *_ in reported] == rows['method'].tolist()
    accs = [accuracy(model, *d.splits['test'], d.task, 512, batch_statistics=False) for *_, model, d in reported]
    assert accs == pytest.approx(rows['test_acc'].tolist(), abs=1e-9)

    recorded = tmp_path / 'results' / 'architectures' / 'breastmnist'    # every row's network, kept with the CSV
    assert sorted(f.name for f in recorded.iterdir()) == ['darts-seed0.json', 'random-seed0.json', 'zodartspp-seed0.json']
    assert json.loads((recorded / 'random-seed0.json').read_text()) == drawn
    for job, row in (('zodartspp', 0), ('darts', 1)):
        arch = json.loads((recorded / f'{job}-seed0.json').read_text())
        assert rows['params'].iloc[row] == sum(p.numel() for p in build_model(arch, 'size_variable', {}).parameters())

    again = _reproduce(tmp_path, '--jobs', 'zodartspp', 'darts', 'resnet18', 'random')
    assert 'nni-zodarts' not in again                    # nothing re-run
    assert len(pd.read_csv(csv)) == 4

    rows.drop(index=1).to_csv(csv, index=False)                 # a finished search is not run again, only retraining
    shutil.rmtree(tmp_path / 'runs' / 'breastmnist' / 'darts' / 'seed0' / 'retrain')
    redo = _reproduce(tmp_path, '--jobs', 'darts')
    assert 'nni-zodarts retrain' in redo and 'nni-zodarts run' not in redo
    redone = pd.read_csv(csv, keep_default_na=False)
    assert len(redone) == 4 and redone['method'].iloc[-1] == 'darts' and redone['params'].iloc[-1] == rows['params'][1]

    _reproduce(tmp_path, '--report')
    assert (tmp_path / 'reproduction_breastmnist.png').read_bytes()[:4] == b'\x89PNG'

    args = argparse.Namespace(runs=tmp_path / 'runs', dataset='breastmnist', seeds=[0])
    budgets = derive_budgets(args, samples_per_run=20)
    search = tmp_path / 'runs' / 'breastmnist' / 'zodartspp' / 'seed0' / 'search'     # spec §6, counted on frozen nets
    probs = {label: dict(map(tuple, pairs))
             for label, pairs in json.loads((search / 'probabilities.json').read_text()).items()}
    space_kwargs = json.loads((search / 'search_config.json').read_text())['space_kwargs']
    g = torch.Generator().manual_seed(0)
    counts = torch.tensor([float(sum(p.numel() for p in create_space('size_variable', **space_kwargs).freeze(
        sample_architecture(probs, g)).parameters())) for _ in range(20)], dtype=torch.float64)
    q = counts.quantile(torch.tensor([0.2, 0.4, 0.6], dtype=torch.float64)).tolist()
    assert budgets == {'small': (0, round(q[0])), 'medium': (round(q[1]), round(q[2]))} and q[0] < q[2]


def test_targets_compare_the_means_with_the_papers_and_with_unconstrained():
    rows = [('zodartspp', 200_000, [0.88, 0.89, 0.90]), ('zodartspp (small)', 120_000, [0.87, 0.88, 0.89]),
            ('zodartspp (medium)', 150_000, [0.89, 0.89, 0.89])]
    frame = pd.DataFrame([{'dataset': 'breastmnist', 'retrain_epochs': 300, 'variant': variant, 'seed': seed,
                           'test_acc': acc, 'test_auc': 0.9, 'test_acc_max': 0.9, 'params': params,
                           'search_seconds': 1.0, 'retrain_seconds': 1.0}
                          for variant, params, accs in rows for seed, acc in enumerate(accs)])
    lines = target_lines(summarise(frame))
    assert lines[0].endswith('+0.5 points, met')                              # 0.890 vs 0.885
    assert '40% fewer' in lines[1] and lines[1].endswith('-1.0 points of ACC: met')
    assert '25% fewer' in lines[2] and lines[2].endswith('not >= 35% smaller')
    frame.loc[frame.variant == 'zodartspp (small)', 'test_acc'] -= 0.02
    assert target_lines(summarise(frame))[1].endswith('-3.0 points of ACC: missed')
    one_seed = target_lines(summarise(frame[frame.seed == 0]))
    assert '(1 seed)' in one_seed[1] and one_seed[0].endswith('-0.5 points, missed so far (the target is a 3-seed mean)')


def test_random_small_draws_inside_the_window_the_same_way_for_each_seed(tmp_path):
    # Retina's window is derived; with no unconstrained runs in this runs folder it is the one the CSV's rows used
    args = argparse.Namespace(runs=tmp_path, dataset='retinamnist', seeds=[1, 2, 3])
    assert budget_window('small', 2, args) == DERIVED_BUDGETS['retinamnist']['small'] == (0, 198_808)
    for dataset, shape, window in (('retinamnist', {'in_channels': 3, 'num_classes': 5}, (0, 198_808)),
                                   ('breastmnist', {}, PAPER_BUDGETS['breastmnist']['medium'])):
        drawn = random_architecture(2, window, dataset)
        params = sum(p.numel() for p in build_model(drawn, 'size_variable', shape).parameters())   # as retrained
        assert window[0] <= params <= window[1]
        assert not dead_cells(drawn) and drawn == prune_dead_edges(drawn)
        assert drawn == random_architecture(2, window, dataset) != random_architecture(3, window, dataset)
        assert drawn != random_architecture(2)          # seed 2's first draw (308k parameters) fits neither window

    rows = [('zodartspp', 200_000, [0.88, 0.89]), ('random (small)', 150_000, [0.85, 0.87]),
            ('zodartspp (small)', 120_000, [0.87, 0.88]), ('random', 190_000, [0.88, 0.88])]
    frame = pd.DataFrame([{'dataset': 'breastmnist', 'retrain_epochs': 300, 'variant': variant, 'seed': seed,
                           'test_acc': acc, 'test_auc': 0.9, 'test_acc_max': 0.9, 'params': params,
                           'search_seconds': 1.0, 'retrain_seconds': 1.0}
                          for variant, params, accs in rows for seed, acc in enumerate(accs)])
    table = summarise(frame)
    assert table.index.get_level_values('variant').tolist() == ['zodartspp', 'zodartspp (small)', 'random (small)',
                                                                'random']
    assert target_lines(table)[-1] == ('- breastmnist small: ZO-DARTS++ 0.875 ± 0.007 at 120,000 parameters, random '
                                       'draws in the window 0.860 ± 0.014 at 150,000 (2 seeds): +1.5 points')


def test_retraining_epochs_default_to_the_cpu_protocol_per_data_set():
    assert parse_args(['--dataset', 'pneumoniamnist']).retrain_epochs == 100      # the CPU protocol: at least 100
    assert parse_args(['--dataset', 'retinamnist']).retrain_epochs == 300         # the papers' 300
    assert parse_args(['--dataset', 'pneumoniamnist', '--retrain-epochs', '300']).retrain_epochs == 300


def test_missing_runs_lists_each_job_seeds_without_a_row():
    done = [(d, m, b, s) for d in ('breastmnist', 'retinamnist', 'pneumoniamnist') for s in (1, 2, 3)
            for m, b in (('zodartspp', ''), ('darts', ''), ('resnet18', ''), ('zodartspp', 'small'),
                         ('zodartspp', 'medium'), ('random', ''))]
    frame = pd.DataFrame(done, columns=['dataset', 'method', 'budget', 'seed'])
    assert missing_runs(frame) == ''
    drop = ((frame.dataset == 'retinamnist') & (frame.method == 'darts') & (frame.seed > 1)) | (
        (frame.dataset == 'pneumoniamnist') & (frame.budget == 'small') & (frame.seed == 3))
    assert missing_runs(frame[~drop]) == 'retinamnist darts seeds 2, 3; pneumoniamnist zodartspp-small seed 3'


def test_a_budgeted_search_starts_from_the_unconstrained_snapshot_and_ends_as_if_run_alone(tmp_path):
    # The size phase (and the budget) starts at epoch 1; 160 images at batch 16 make two alpha steps per epoch (the
    # first Adam step after the size phase's reset moves by lr * sign, whatever the budget).
    two_epochs = ['--search-epochs', '2', '--max-samples', '160']
    shared = _reproduce(tmp_path / 'shared', *two_epochs, '--jobs', 'zodartspp', 'zodartspp-small')
    alone = _reproduce(tmp_path / 'alone', *two_epochs, '--jobs', 'zodartspp-small')
    assert 'the search starts from' in shared and 'the search starts from' not in alone

    def search(root, job):
        return root / 'runs' / 'breastmnist' / job / 'seed0' / 'search'

    free, forked, scratch = search(tmp_path / 'shared', 'zodartspp'), *(search(tmp_path / d, 'zodartspp-small')
                                                                         for d in ('shared', 'alone'))
    epoch0 = [pd.read_csv(d / 'search_history.csv').iloc[0] for d in (free, forked)]
    assert epoch0[0]['seconds'] == epoch0[1]['seconds']                      # epoch 0 was taken over, not redone
    a, b, c = (final_alpha(d) for d in (forked, scratch, free))
    assert (a[['label', 'choice']] == b[['label', 'choice']]).all().all()
    assert a['probability'].sub(b['probability']).abs().max() < 1e-5
    assert a['probability'].sub(c['probability']).abs().max() > 1e-3        # the budget acted after the snapshot
    assert json.loads((forked / 'architecture.json').read_text()) == json.loads((scratch / 'architecture.json')
                                                                                .read_text())
    rows = [pd.read_csv(d / 'results' / 'reproduction.csv').iloc[-1] for d in (tmp_path / 'shared', tmp_path / 'alone')]
    assert rows[0]['params'] == rows[1]['params'] and rows[0]['test_acc'] == rows[1]['test_acc']

    other = tmp_path / 'other'                                  # an unconstrained run with other settings is not used
    command = json.loads((free.parent / 'job.json').read_text())
    command = [str(other) if arg == str(free.parent) else arg for arg in command]
    command[command.index('--seed') + 1] = '5'
    share_search_prefix(other, [*command, '--param-budget', '0:1000'], free.parent)
    assert not other.exists()


def test_a_moved_run_folder_resumes_and_other_settings_are_refused(tmp_path):
    for kind in ('run', 'retrain'):                              # searched jobs, and ResNet-18 / random (retrain only)
        old, new = tmp_path / kind / 'old' / 'seed1', tmp_path / kind / 'new' / 'seed1'
        made = [kind, '--output', str(old / 'retrain' if kind == 'retrain' else old), '--arch',
                str(old / 'search' / 'architecture.json'), '--seed', '1']
        _same_settings(old, made)
        new.parent.mkdir(exist_ok=True)
        old.rename(new)
        now = [arg.replace(str(old), str(new)) for arg in made]
        _same_settings(new, now)                                 # the same run, moved: accepted, job.json follows it
        assert json.loads((new / 'job.json').read_text()) == now
        with pytest.raises(SystemExit, match='other settings'):
            _same_settings(new, now[:-1] + ['2'])
