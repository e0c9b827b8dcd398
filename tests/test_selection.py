"""benchmarks.selection: each rule reads the test ACC at the epoch it should, from a run's per-epoch history."""
import subprocess
import sys
from pathlib import Path

import pandas as pd

from benchmarks.reproduce import COLUMNS
from benchmarks.selection import read_runs

ROOT = Path(__file__).resolve().parents[1]


def _write_run(tmp_path, epochs=5):
    history = pd.DataFrame({           # epochs 1 and 3 tie on val ACC; 3 has the lower val loss; 2 the lowest
        'epoch': range(epochs), 'val_acc': [0.5, 0.7, 0.6, 0.7, 0.4], 'val_loss': [1.0, 0.9, 0.5, 0.8, 2.0],
        'test_acc': [0.10, 0.80, 0.30, 0.40, 0.50]})     # every rule reads another value; the max is at epoch 1
    folder = tmp_path / 'runs' / 'retinamnist' / 'zodartspp-small' / 'seed2' / 'retrain'
    folder.mkdir(parents=True)
    history.to_csv(folder / 'retrain_history.csv', index=False)
    row = dict.fromkeys(COLUMNS, 0) | {'dataset': 'retinamnist', 'method': 'zodartspp', 'budget': 'small', 'seed': 2,
                                       'retrain_epochs': epochs}
    pd.DataFrame([row], columns=COLUMNS).to_csv(tmp_path / 'reproduction.csv', index=False)


def _add_seed_without_run_folder(tmp_path, seed):
    """A second CSV row, like the first but for ``seed``, whose run folder does not exist (run on another machine)."""
    csv = pd.read_csv(tmp_path / 'reproduction.csv', keep_default_na=False)
    pd.concat([csv, csv.assign(seed=seed)]).to_csv(tmp_path / 'reproduction.csv', index=False)


def test_each_rule_picks_its_epoch(tmp_path):
    _write_run(tmp_path)
    [run] = read_runs(tmp_path / 'runs', tmp_path / 'reproduction.csv').to_dict('records')
    assert (run['job'], run['seed']) == ('zodartspp-small', 2)
    assert run['val ACC (the table)'] == 0.40           # the tie goes to the lower validation loss
    assert run['lowest val loss'] == 0.30
    assert run['last epoch'] == 0.50 and run['max (papers)'] == 0.80
    assert abs(run['mean of all epochs'] - 0.42) < 1e-12


def test_a_history_of_another_length_is_left_out_and_no_runs_is_a_clear_error(tmp_path):
    _write_run(tmp_path)
    csv = pd.read_csv(tmp_path / 'reproduction.csv')
    csv.assign(retrain_epochs=300).to_csv(tmp_path / 'reproduction.csv', index=False)
    assert read_runs(tmp_path / 'runs', tmp_path / 'reproduction.csv').empty
    done = subprocess.run([sys.executable, '-m', 'benchmarks.selection', '--runs', str(tmp_path / 'runs'), '--results',
                           str(tmp_path / 'reproduction.csv')], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and 'run benchmarks.reproduce first' in done.stderr


def test_a_row_without_a_run_folder_is_left_out_and_counted(tmp_path, capsys):
    _write_run(tmp_path)
    _add_seed_without_run_folder(tmp_path, 3)
    [run] = read_runs(tmp_path / 'runs', tmp_path / 'reproduction.csv').to_dict('records')
    assert run['seed'] == 2
    assert '1 of the 2 rows of reproduction.csv have no run folder' in capsys.readouterr().err


def test_seeds_selects_rows_and_counts_only_their_missing_folders(tmp_path, capsys):
    _write_run(tmp_path)
    _add_seed_without_run_folder(tmp_path, 3)
    assert read_runs(tmp_path / 'runs', tmp_path / 'reproduction.csv', seeds=[3]).empty
    assert '1 of the 1 rows of reproduction.csv have no run folder' in capsys.readouterr().err
    [run] = read_runs(tmp_path / 'runs', tmp_path / 'reproduction.csv', seeds=[2]).to_dict('records')
    assert run['seed'] == 2 and capsys.readouterr().err == ''
    done = subprocess.run([sys.executable, '-m', 'benchmarks.selection', '--runs', str(tmp_path / 'runs'), '--results',
                           str(tmp_path / 'reproduction.csv'), '--seeds', '2'], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and '| retinamnist | zodartspp-small | 1 | 0.400 |' in done.stdout
