"""The package's layers hold: each module imports only from its own layer or those below it, and no
module that runs on a worker imports the tools."""
import ast
import pathlib

import pytest
from conftest import ROOT

# Lowest first. Top-level modules (the command line, its entry points) may import anything.
LAYERS = ('config', 'core', 'io', 'transforms', 'tools')
WORKER_LAYERS = ('config', 'core', 'io', 'transforms')
PACKAGE = ROOT / 'pipeline'


def layer_of(module: str):
    parts = module.split('.')
    return parts[1] if len(parts) > 2 and parts[1] in LAYERS else None


def modules():
    for path in sorted(PACKAGE.rglob('*.py')):
        yield '.'.join(path.relative_to(ROOT).with_suffix('').parts), path


def imported(path: pathlib.Path):
    """Every module of ours that a file imports, at the top or inside a function."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('pipeline'):
            for alias in node.names:
                yield f'{node.module}.{alias.name}' if node.module.count('.') <= 1 else node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.startswith('pipeline'))


def test_every_module_sits_in_a_layer_or_is_an_entry_point():
    top = sorted(module for module, _ in modules() if layer_of(module) is None)
    assert top == ['pipeline.__init__', 'pipeline.__main__', 'pipeline.cli', 'pipeline.report']


@pytest.mark.parametrize('module, path', list(modules()), ids=[module for module, _ in modules()])
def test_imports_go_down_the_layers(module, path):
    own = layer_of(module)
    if own is None:
        return
    for target in imported(path):
        other = layer_of(target)
        assert other is not None, f'{module} imports {target}, an entry point'
        assert LAYERS.index(other) <= LAYERS.index(own), f'{module} ({own}) imports {target} ({other})'
        if own in WORKER_LAYERS:
            assert other != 'tools', f'{module} runs on workers and imports {target}'


@pytest.mark.parametrize('module, path', [(m, p) for m, p in modules() if layer_of(m) in ('config', 'core')],
                         ids=[m for m, _ in modules() if layer_of(m) in ('config', 'core')])
def test_the_core_is_pure(module, path):
    """The core runs without Beam: its functions are tested, and reused, without a pipeline. (config
    only registers its options with Beam's parser.)"""
    beam_imports = {node.module if isinstance(node, ast.ImportFrom) else alias.name
                    for node in ast.walk(ast.parse(path.read_text()))
                    if isinstance(node, (ast.Import, ast.ImportFrom))
                    for alias in node.names
                    if ((node.module if isinstance(node, ast.ImportFrom) else alias.name) or '').startswith('apache_beam')}
    if layer_of(module) == 'core':
        assert not beam_imports, f'{module} imports {beam_imports}'
    else:
        assert beam_imports <= {'apache_beam.options.pipeline_options'}, beam_imports


def test_every_test_module_has_its_own_name():
    # pytest imports test modules by their base name (no __init__.py here): two of one name in two
    # folders stop the whole run at collection.
    names = [path.name for path in (ROOT / 'tests').rglob('test_*.py')]
    assert len(names) == len(set(names)), sorted(name for name in names if names.count(name) > 1)
