"""The shape of the project, read from its imports: scripts import libraries, never scripts; each
file imports only from the layers below it; network.py needs nothing of the project but
settings; no import circle. Every Python file of the project has its layer here."""
import ast
import os

from conftest import ROOT

# Bottom to top; a file imports only from lower layers or its own (without a circle).
LAYERS = [('settings', 'schema'), ('config',), ('runs', 'checkpoints', 'records'), ('network',),
          ('recipe', 'transforms', 'dataset'), ('pictures',), ('infer', 'preparation'),
          ('train', 'eval', 'predict', 'compare', 'bench', 'prepare', 'toy', 'clean', 'experiment')]
SCRIPTS = set(LAYERS[-1])
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def project_imports():
    """{module: set of project modules it imports} for every .py file of the project folder."""
    found = {}
    for file in sorted(f for f in os.listdir(ROOT) if f.endswith('.py')):
        with open(os.path.join(ROOT, file)) as f:
            tree = ast.parse(f.read(), file)
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {a.name.split('.')[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split('.')[0])
        found[file[:-3]] = names
    modules = set(found)
    return {m: names & modules - {m} for m, names in found.items()}


def test_every_file_has_its_layer_and_imports_only_from_below():
    imports = project_imports()
    assert set(imports) == set(LAYER), 'a file without a layer: add it to LAYERS'
    for module, names in imports.items():
        for name in names:
            assert name not in SCRIPTS, f'{module}.py imports the script {name}.py'
            assert LAYER[name] <= LAYER[module], f'{module}.py imports {name}.py from above'
    assert imports['network'] == {'settings'}


def test_no_import_circle():
    imports = project_imports()

    def visit(module, path):
        assert module not in path, ' -> '.join(path + [module])
        for name in imports[module]:
            visit(name, path + [module])
    for module in imports:
        visit(module, [])


def test_every_script_runs_on_its_own_and_every_module_says_what_it_is_for():
    for module in LAYER:
        with open(os.path.join(ROOT, f'{module}.py')) as f:
            text = f.read()
        tree = ast.parse(text)
        assert ast.get_docstring(tree) or text.startswith('#'), f'{module}.py has no docstring'
        ends = "if __name__ == '__main__':\n    main(sys.argv[1:])\n"
        if module in SCRIPTS:
            assert text.endswith(ends), f'{module}.py does not end with main(sys.argv[1:])'
