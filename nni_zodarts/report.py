"""``nni-zodarts report EXPERIMENT_ID``: an nnictl sweep's trials as a table (CSV) and a params-vs-accuracy
Pareto plot, collected through NNI's Python API."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

__all__ = ['collect', 'pareto_front', 'main']


def collect(experiment_id: str, port: int = 8080) -> pd.DataFrame:
    """One row per trial with a final result: its parameters and its reported metrics."""
    from nni.experiment import Experiment
    try:
        experiment, started = Experiment.connect(port), False
        if experiment.id != experiment_id:
            raise ValueError(f'port {port} serves experiment {experiment.id}, not {experiment_id}: pass its --port')
    except (ConnectionError, OSError, RuntimeError):
        experiment, started = Experiment(None, id=experiment_id), True     # stopped: open it read-only
        experiment.view(port=port, non_blocking=True)
    try:
        rows = []
        for result in experiment.export_data():
            value = result.value if isinstance(result.value, dict) else json.loads(result.value) \
                if isinstance(result.value, str) else {'default': result.value}
            rows.append({'trial': result.trialJobId, **result.parameter, **value})
    finally:
        if started:
            experiment.stop()
    return pd.DataFrame(rows)


def pareto_front(frame: pd.DataFrame, size: str = 'params', score: str = 'default') -> pd.DataFrame:
    """Trials no other trial beats with fewer (or equal) parameters and a higher (or equal) score."""
    ordered = frame.sort_values([size, score], ascending=[True, False])
    best, keep = float('-inf'), []
    for index, row in ordered.iterrows():
        if row[score] > best:
            keep.append(index)
            best = row[score]
    return ordered.loc[keep]


def plot_pareto(frame: pd.DataFrame, path: Path, score: str) -> Path:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    front = pareto_front(frame, score=score)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(frame['params'] / 1e3, frame[score], label='trials')
    ax.plot(front['params'] / 1e3, front[score], 'r-o', label='Pareto front')
    ax.set_xlabel('parameters (k)')
    ax.set_ylabel(score)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='nni-zodarts report', description=__doc__.splitlines()[0])
    parser.add_argument('experiment_id')
    parser.add_argument('--port', type=int, default=8080)
    parser.add_argument('--output', type=Path, default=None, help='default: reports/EXPERIMENT_ID')
    args = parser.parse_args(argv)
    frame = collect(args.experiment_id, args.port)
    if frame.empty:
        print(f'experiment {args.experiment_id} has no trial with a final result yet')
        return 1
    output = args.output or Path('reports') / args.experiment_id
    output.mkdir(parents=True, exist_ok=True)
    frame.to_csv(output / 'trials.csv', index=False)
    score = 'test_acc' if 'test_acc' in frame else 'default'
    plot_pareto(frame, output / 'pareto.png', score)
    print(frame.to_string(index=False))
    print(f'written: {output / "trials.csv"}, {output / "pareto.png"}')
    return 0
