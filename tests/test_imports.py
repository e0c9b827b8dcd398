"""Imports point one way, form no cycle, and importing the package changes nothing in the importing process."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The strategy core: what a NasExperiment user imports. It must not reach the MedMNIST pipeline, the CLI or the
# project's spaces.
CORE = {'strategy', 'module', 'architect', 'zo_estimator', 'sparsemax', 'budget', 'supermodules', 'distributed', 'cost_model',
        'trace', 'flops', 'latency', 'nni_workarounds', '__init__'}


def imports(path: Path, top_level_only: bool) -> set[str]:
    """Modules ``path`` imports (``nni_zodarts.x`` for relative ones), anywhere or only when it is imported."""
    tree = ast.parse(path.read_text())
    package = path.parent.name
    nodes = []
    if top_level_only:
        stack = list(tree.body)
        while stack:                          # module level, including under with/try/if, not inside functions
            node = stack.pop()
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                nodes.append(node)
            elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                stack.extend(ast.iter_child_nodes(node))
    else:
        nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif node.level:                      # from .x import y / from . import x
            base = package if not node.module else f'{package}.{node.module}'
            out.update([base] if node.module else [f'{package}.{alias.name}' for alias in node.names])
        else:
            out.add(node.module)
    return out


def modules(package: str) -> dict[str, Path]:
    return {f'{package}.{p.stem}': p for p in sorted((ROOT / package).glob('*.py'))}


def test_the_strategy_core_imports_nothing_above_it():
    for name, path in modules('nni_zodarts').items():
        if name.split('.')[-1] not in CORE:
            continue
        for target in imports(path, top_level_only=False):
            assert not target.startswith('search_spaces'), f'{name} imports {target}'
            if target.startswith('nni_zodarts.'):
                assert target.split('.')[1] in CORE, f'{name} imports {target}, outside the strategy core'


def test_search_spaces_import_nothing_from_the_plugin():
    for name, path in modules('search_spaces').items():
        assert not any(t.startswith('nni_zodarts') for t in imports(path, top_level_only=False)), name


def test_no_import_cycle():
    graph = {}
    for package in ('nni_zodarts', 'search_spaces'):
        for name, path in modules(package).items():
            graph[name] = {t for t in imports(path, top_level_only=True)
                           if t in graph or t.startswith(('nni_zodarts.', 'search_spaces.'))}
    for package in ('nni_zodarts', 'search_spaces'):                 # ``nni_zodarts`` is its __init__
        graph[package] = graph.pop(f'{package}.__init__')
    state = {}

    def visit(node, path):
        state[node] = 'open'
        for nxt in sorted(graph.get(node, ())):
            if nxt == node.rsplit('.', 1)[0]:
                continue                                               # a submodule runs after its package
            if state.get(nxt) == 'open':
                pytest.fail('import cycle: ' + ' -> '.join(path + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 'done'

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_importing_the_package_changes_no_global_state():
    code = '''
import logging, warnings
import nni.nas.oneshot.pytorch.differentiable as darts
before = (list(warnings.filters), list(logging.getLogger('nni.nas.experiment.config.experiment').filters),
          darts.DartsLightningModule.arch_parameters)
import nni_zodarts, nni_zodarts.cli
after = (list(warnings.filters), list(logging.getLogger('nni.nas.experiment.config.experiment').filters),
         darts.DartsLightningModule.arch_parameters)
assert before == after, (before, after)
'''
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
