"""The shape of the project, read from its imports: the card's files and the commands at the root,
the plumbing in plumbing/; scripts import libraries, never scripts; each file imports only from
the layers below it (plumbing knows nothing of the model or the data; network.py needs nothing
of the project but settings); no import circle; no test module imports another. Every Python
file of the project has its layer here."""
import ast
import os

import pytest

from conftest import ROOT

# Bottom to top; a file imports only from lower layers or its own (without a circle).
LAYERS = [('settings',),
          ('plumbing.reads',), ('plumbing', 'plumbing.config'),
          ('plumbing.scripts',), ('plumbing.processes', 'plumbing.files', 'plumbing.images'),
          ('plumbing.outputs',), ('plumbing.records', 'plumbing.checkpoints', 'plumbing.pictures'),
          ('plumbing.preparation', 'plumbing.layout', 'plumbing.runs', 'plumbing.reports'),
          ('network',), ('transforms', 'dataset'), ('inference',),
          ('train', 'eval', 'predict', 'compare', 'bench', 'prepare', 'toy', 'experiment',
           'plumbing.clean')]
SCRIPTS = set(LAYERS[-1])
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}
PLUMBING = {name for name in LAYER if name.startswith('plumbing')} - SCRIPTS
CARD = {'settings.py', 'train.py', 'eval.py', 'network.py', 'dataset.py', 'transforms.py',
        'clean.sh', 'tensorboard.sh', 'requirements.txt', 'models', 'tests', 'README.md'}
RESEARCH = {'inference.py'}  # the research the card's files need: the test-time recipe
COMMANDS = {'predict.py', 'prepare.py', 'toy.py', 'experiment.py', 'compare.py', 'bench.py',
            'demo.sh'}


def module_files():
    """{module: path} of every .py file of the project folder and of plumbing/."""
    found = {f[:-3]: os.path.join(ROOT, f) for f in os.listdir(ROOT) if f.endswith('.py')}
    folder = os.path.join(ROOT, 'plumbing')
    found.update({'plumbing' if f == '__init__.py' else f'plumbing.{f[:-3]}':
                  os.path.join(folder, f) for f in os.listdir(folder) if f.endswith('.py')})
    return found


def imports_of(path):
    """The project modules a file imports, in order ('plumbing.config' for `from plumbing import
    config`)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names += [f'{node.module}.{a.name}' if node.module == 'plumbing' else node.module
                      for a in node.names]
    return names


def project_imports():
    """{module: set of project modules it imports} for every project file."""
    files = module_files()
    return {m: {n for n in imports_of(path) if n in files} - {m} for m, path in files.items()}


def test_every_file_has_its_layer_and_imports_only_from_below():
    imports = project_imports()
    assert set(imports) == set(LAYER), 'a file without a layer: add it to LAYERS'
    for module, names in imports.items():
        for name in names:
            assert name not in SCRIPTS, f'{module}.py imports the script {name}.py'
            assert LAYER[name] <= LAYER[module], f'{module}.py imports {name}.py from above'
    assert imports['network'] == {'settings'}
    for module in PLUMBING:
        assert imports[module] <= PLUMBING | {'settings'}, f'{module} imports {imports[module]}'


def test_no_import_circle():
    imports = project_imports()

    def visit(module, path):
        assert module not in path, ' -> '.join(path + [module])
        for name in imports[module]:
            visit(name, path + [module])
    for module in imports:
        visit(module, [])


def test_the_root_shows_the_card_and_the_commands_and_the_plumbing_is_in_one_folder():
    tracked = {name for name in os.listdir(ROOT) if not name.startswith('.')}
    ignored = {'logdir', 'toy', 'gpu-out', '__pycache__'}  # run outputs and caches
    assert tracked - ignored == CARD | RESEARCH | COMMANDS | {'plumbing', 'docs'}, tracked - ignored


def test_every_script_runs_on_its_own_and_every_module_says_what_it_is_for():
    for module, path in module_files().items():
        with open(path) as f:
            text = f.read()
        tree = ast.parse(text)
        assert ast.get_docstring(tree) or text.startswith('#'), f'{module}.py has no docstring'
        ends = "if __name__ == '__main__':\n    main(sys.argv[1:])\n"
        if module in SCRIPTS:
            assert text.endswith(ends), f'{module}.py does not end with main(sys.argv[1:])'


def test_scripts_import_the_plumbing_first():
    """A settings.py that Python cannot run is one sentence (plumbing/config.py imports it) only
    where nothing of the project imports it before the plumbing does."""
    files = module_files()
    for module in SCRIPTS | {'dataset'}:
        first = next(n for n in imports_of(files[module]) if n in files)
        assert first.startswith('plumbing'), f'{module}.py imports {first} before the plumbing'


def test_no_test_module_imports_another():
    tests = os.path.dirname(os.path.abspath(__file__))
    mine = {f[:-3] for f in os.listdir(tests) if f.startswith('test_') and f.endswith('.py')}
    for name in mine:
        imported = set(imports_of(os.path.join(tests, f'{name}.py'))) & mine
        assert not imported, f'{name}.py imports {imported}'


def test_no_name_is_undefined_even_where_only_a_gpu_goes():
    """Every name the project's files and tests use is defined (pyflakes): a branch that only a
    GPU takes (a skipif on CUDA, a CUDA path of bench.py) fails here, on the CPU, not in a GPU
    call."""
    checker, messages = pytest.importorskip('pyflakes.checker'), \
        pytest.importorskip('pyflakes.messages')
    undefined = (messages.UndefinedName, messages.UndefinedLocal, messages.UndefinedExport)
    tests = os.path.dirname(os.path.abspath(__file__))
    paths = list(module_files().values()) + [os.path.join(tests, f) for f in os.listdir(tests)
                                             if f.endswith('.py')]
    found = []
    for path in paths:
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        found += [f'{path}:{m.lineno}: {m.message % m.message_args}'
                  for m in checker.Checker(tree, filename=path).messages
                  if isinstance(m, undefined)]
    assert not found, found
