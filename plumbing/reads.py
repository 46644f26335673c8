"""Which settings the code reads, found in the code itself: every `settings.NAME` of the project's
files (the root's and plumbing/'s, docstrings and comments left out), and every name of a
setting given to a call as a string (`files.folder('LOG_DIR')`), by the function or class that
reads it, and what each phase of a run reads: the settings of the functions it starts from
and of every project function or class they name, and so on (a class counts whole). The checks
that depend on what a run reads take it from here, so a knob read where its idea lives needs no
list: what a resume compares (training's), what evaluation takes from a checkpoint (the
network's), what gives a result a new name, and the notes of a setting given that is not read.
Not here: the settings themselves (config.py)."""
import ast
import contextlib
import functools
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Where each phase starts: a module (all of it) or a module's function or class. Training is
# what makes the weights: train.py but its validation; the network is what a checkpoint
# defines: the model and its input.
PHASES = {
    'network': ('network.build', 'inference.to_input'),
    'training': ('train',),
    'validation': ('inference.validate',),
    'evaluation': ('eval',),
    'prediction': ('predict',),
}
STOPS = {'training': ('inference.validate',)}  # where a phase does not follow a name


@functools.lru_cache(maxsize=4)
def _code(root=ROOT):
    """{(module, name): (settings read, names given as strings, (module, name) named)} of every
    top-level function and class of the project's files, and (module, None) for each module's
    code outside them. Each file's part is kept in plumbing/__pycache__ until the file changes
    (every script starts with this: parsing them all anew takes a tenth of a second), unless
    Python is told to write no caches (PYTHONDONTWRITEBYTECODE)."""
    cache = os.path.join(root, 'plumbing', '__pycache__', 'reads.json')
    try:
        with open(cache) as f:
            kept = json.load(f)
    except (OSError, ValueError):
        kept = {}
    fresh, found, changed = {}, {}, False
    for folder, package in ((root, ''), (os.path.join(root, 'plumbing'), 'plumbing.')):
        names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        for name in names:
            if name.endswith('.py') and name != 'settings.py':
                module = package + name[:-3] if name != '__init__.py' else package.rstrip('.')
                path = os.path.join(folder, name)
                stat = os.stat(path)
                stamp = f'{stat.st_mtime_ns} {stat.st_size}'
                if kept.get(path, {}).get('stamp') != stamp:
                    kept[path], changed = {'stamp': stamp, 'defs': _parsed(module, path)}, True
                fresh[path] = kept[path]
                found.update({(module, d[0]): (frozenset(d[1]), frozenset(d[2]), frozenset(
                    map(tuple, d[3]))) for d in fresh[path]['defs']})
    if sys.dont_write_bytecode or not changed and fresh.keys() == kept.keys():
        return found  # told to write no caches (as Python's own), or nothing new to keep
    with contextlib.suppress(OSError):  # a folder that cannot be written: parsed each time
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        tmp = f'{cache}.tmp{os.getpid()}'
        with open(tmp, 'w') as f:
            json.dump(fresh, f)
        os.replace(tmp, cache)
    return found


def _parsed(module, path):
    """[[name or None, settings read, names given, [module, name] named]] of one file (see
    _definitions), as JSON keeps it; none for a file being edited (read by no phase)."""
    with open(path, encoding='utf-8', errors='replace') as f:
        try:
            tree = ast.parse(f.read())
        except SyntaxError:
            return []
    return [[name, sorted(read), sorted(given), sorted(named, key=str)]
            for (_, name), (read, given, named) in _definitions(module, tree).items()]


def _definitions(module, tree):
    """The entries of `_code` for one module's syntax tree."""
    aliases, defined = {}, {}
    for node in ast.walk(tree):  # the project modules it imports, by the name it uses
        if isinstance(node, ast.Import):
            aliases.update({a.asname or a.name: a.name for a in node.names})
        elif isinstance(node, ast.ImportFrom) and node.module == 'plumbing':
            aliases.update({a.asname or a.name: f'plumbing.{a.name}' for a in node.names})
    tops = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    own = {n.name for n in tops}
    rest = ast.Module(body=[n for n in tree.body if n not in tops], type_ignores=[])
    for key, node in [((module, n.name), n) for n in tops] + [((module, None), rest)]:
        read, given, named = set(), set(), set()
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call):
                given |= {a.value for a in sub.args + [k.value for k in sub.keywords]
                         if isinstance(a, ast.Constant) and isinstance(a.value, str) and
                         re.fullmatch(r'[A-Z][A-Z0-9_]*', a.value)}
            if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name):
                if sub.value.id == 'settings' and sub.attr.isupper():
                    read.add(sub.attr)
                elif sub.value.id in aliases:
                    named.add((aliases[sub.value.id], sub.attr))
            elif isinstance(sub, ast.Name) and sub.id in own:
                named.add((module, sub.id))
        defined[key] = (frozenset(read), frozenset(given), frozenset(named))
    return defined


@functools.lru_cache(maxsize=None)
def anywhere(root=ROOT, strings=False):
    """The names the project's code reads as `settings.<NAME>` (and, with `strings`, those it
    gives to a call as a string, which may name a setting or not)."""
    return frozenset(k for read, given, _ in _code(root).values()
                     for k in (read | given if strings else read))


@functools.lru_cache(maxsize=None)
def phase(name, root=ROOT):
    """The settings phase `name` of PHASES reads (see the module's docstring)."""
    code, stops = _code(root), {tuple(s.rsplit('.', 1)) for s in STOPS.get(name, ())}
    modules = {module for module, _ in code}
    todo = []
    for start in PHASES[name]:
        todo += [k for k in code if k[0] == start] if start in modules else \
            [tuple(start.rsplit('.', 1))]
    seen, read = set(), set()
    while todo:
        key = todo.pop()
        if key in seen or key in stops or key not in code:
            continue
        seen.add(key)
        keys, given, named = code[key]
        read |= keys | given
        todo += named
        todo.append((key[0], None))  # the module's own code runs when it is imported
    return frozenset(read)
