"""Checkpoints: written so that a kill or a full disk never leaves half a file, read back with
every mistake said in one sentence and their weights checked to be finite, told apart from other
files of their names, fingerprinted, and the settings they were trained with restored for
evaluation (results named after what differs). Not here: what goes into one (train.py) and
loading one into a network (network.py, inference.py)."""
import collections
import hashlib
import os
import pickle
import re
import shlex
import zipfile

import settings
from plumbing import config, files, processes

NAMES = re.compile(r'(latest|final|best|step_\d+)\.pth')  # what train.py writes into MODEL_DIR


def save_atomic(obj, target, key='MODEL_DIR'):
    """torch.save through a temporary file and a rename: a kill or a full disk never leaves
    half a file at `target`, and the file there before stays as it was."""
    import torch
    with files.writing(target, key):
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        with files.atomic(target) as tmp:
            torch.save(obj, tmp)
            with open(tmp, 'rb') as f:
                os.fsync(f.fileno())


def load_checkpoint(target):
    """A checkpoint as a dict (tensors on the CPU), its weights checked to be finite; a raw state
    dict becomes {'net': it}. Every mistake (no file, a folder, empty, foreign) one sentence."""
    import torch
    if os.path.isdir(target):
        raise config.UserError(f'checkpoint {target} is a folder; give a .pth file, like '
                               f'{os.path.join(target, "final.pth")}.')
    if not os.path.isfile(target):
        raise config.UserError(f'checkpoint {target} does not exist; train first or give the path '
                               f'of an existing .pth file.')
    if os.path.getsize(target) == 0:
        raise config.UserError(f'checkpoint {target} is empty (0 bytes: a copy or a save that did '
                               f'not finish); delete it or give another file.')
    try:
        ckpt = torch.load(target, map_location='cpu', weights_only=True)
    except Exception as e:  # a truncated, foreign or non-torch file
        why = re.sub(r'\x1b\[[0-9;]*m', '', (str(e).strip().splitlines() or [''])[0])
        raise config.UserError(f'checkpoint {target} cannot be read ({type(e).__name__}: '
                               f'{config.cut(why, 160)}); it is not a complete torch '
                               f'checkpoint: give a .pth written by train.py or the original '
                               f'code.') from None
    if not isinstance(ckpt, dict):
        raise config.UserError(f'checkpoint {target} holds a {type(ckpt).__name__}, not a dict; '
                               f'give a file written by train.py or by the original code.')
    if 'net' not in ckpt and all(torch.is_tensor(v) for v in ckpt.values()):
        ckpt = {'net': ckpt}
    kinds = {'net': dict, 'step': int, 'settings': dict, 'optimizer': dict, 'classes': list,
             'palette': list, 'best': dict}  # what train.py writes, as it writes it
    for key, kind in kinds.items():
        if (key in ckpt or key == 'net') and not isinstance(ckpt.get(key), kind) or \
                key == 'palette' and key in ckpt and len(ckpt[key]) != 768:
            raise config.UserError(f'checkpoint {target} holds a malformed {key!r} (not a '
                                   f'{kind.__name__} as train.py writes it: a hand-edited file?); '
                                   f'give a file written by train.py or by the original code.')
    bad = first_non_finite(ckpt['net'])
    if bad is not None:  # it would score or train silently wrong
        raise config.UserError(f'checkpoint {target} holds non-finite values (nan or inf) in '
                               f'{bad!r}; it cannot be used, so give an earlier checkpoint.')
    return ckpt


def latest():
    """MODEL_DIR/latest.pth (see load_checkpoint) to resume from, or None for a new run; one
    sentence when MODEL_DIR holds an earlier run's checkpoints without it, which a new run would
    write over; a broken one names the step checkpoint to take instead."""
    folder = config.path(settings.MODEL_DIR)
    found = sorted(f for f in os.listdir(folder) if NAMES.fullmatch(f)) \
        if os.path.isdir(folder) else []
    steps = sorted((f for f in found if f.startswith('step_')), key=lambda f: int(f[5:-4]))
    if found and 'latest.pth' not in found:
        raise config.UserError(f'MODEL_DIR {folder} holds {", ".join(found[:3])} of an earlier '
                               f'run but no latest.pth to resume from, and a new run would write '
                               f'over them (INIT_FROM may be one: keep it); pass another '
                               f'MODEL_DIR, or run `{clean_command()}` to remove them.')
    try:
        return load_checkpoint(os.path.join(folder, 'latest.pth')) if found else None
    except config.UserError as e:
        if not steps:
            raise
        raise config.UserError(f'{str(e)[:-1]}; or copy {steps[-1]} over it to resume from '
                               f'there.') from None


def clean_command():
    """The clean.sh command that removes this run's checkpoints and logs (for messages)."""
    return ' '.join(['sh clean.sh'] + [shlex.quote(f'{key}={config.path(getattr(settings, key))}')
                                       for key in ('MODEL_DIR', 'LOG_DIR')])


def checkpoint_id(target):
    """<file stem>-<8 hex digits of its absolute path, size and time>: the same for one file,
    different for another file of the same name (a/final.pth, b/final.pth) or a rewritten one."""
    st = os.stat(target)
    key = f'{os.path.abspath(target)}:{st.st_size}:{st.st_mtime_ns}'
    stem = os.path.splitext(os.path.basename(target))[0]
    return f'{stem}-{hashlib.sha256(key.encode()).hexdigest()[:8]}'


def first_non_finite(state):
    """The first key of a state dict whose floating-point tensor holds nan or inf, or None."""
    import torch
    for key, t in state.items():
        if torch.is_tensor(t) and t.is_floating_point() and not torch.isfinite(t).all():
            return key
    return None


def fingerprint(state):
    """sha256 of a state dict's weights and bases (not of BatchNorm statistics: without
    SyncBatchNorm every process keeps its own)."""
    import torch
    digest = hashlib.sha256()
    for key, t in state.items():
        if 'running_' not in key and 'num_batches' not in key:
            digest.update(t.detach().cpu().contiguous().flatten().view(torch.uint8).numpy())
    return digest.hexdigest()


def written_by(target):
    """The run that wrote file `target` when it is a checkpoint of train.py (its keys 'net',
    'step', 'optimizer' and 'settings'): its identity ('run'), '' for one written before runs
    had one; None for any other file. Read without torch and without loading its tensors."""
    class Keys(pickle.Unpickler):  # every object but dicts a placeholder: nothing runs
        def find_class(self, module, name):
            if (module, name) == ('collections', 'OrderedDict'):
                return collections.OrderedDict
            return lambda *args, **kwargs: None

        def persistent_load(self, pid):
            return None
    try:
        with zipfile.ZipFile(target) as archive:
            name = next(n for n in archive.namelist() if n.endswith('/data.pkl'))
            with archive.open(name) as f:
                top = Keys(f).load()
    except Exception:  # not a zip, no data.pkl, a foreign pickle: not ours
        return None
    if not isinstance(top, dict) or not {'net', 'step', 'optimizer', 'settings'} <= set(top):
        return None
    return top['run'] if isinstance(top.get('run'), str) else ''

# ---------------------------------------------------------------------------- settings restored


def restore(target, keep=()):
    """Checkpoint `target` (see load_checkpoint) with every setting it recorded that the network
    reads applied (see network_settings), but those named in `keep` (given on the command
    line); DATA_ROOT too when settings.py's is not a folder. Returns (checkpoint, info):
    {'step', 'trained' (its settings), 'classes' and 'palette' where it holds them}. A setting
    it recorded that this code does not define is refused: the code that read it may have built
    the network. The original's {'net', 'step'} files use the settings as they are."""
    ckpt = load_checkpoint(target)
    saved, now = ckpt.get('settings') or {}, config.resolved()
    foreign = {k: v for k, v in saved.items() if k not in now}
    differ = config.differ(saved, network_settings(saved))
    if foreign:
        raise config.UserError(f'checkpoint {target} was trained with {config.text(foreign)}, '
                               f'which this code\'s settings.py does not define, so it may build '
                               f'another network; score it with the code of the folder that '
                               f'trained it.')
    taken = {k: config.convert(k, saved[k]) for k in differ if k not in keep}
    if ('DATA_ROOT' in saved and 'DATA_ROOT' not in keep
            and not os.path.isdir(config.path(settings.DATA_ROOT))):
        taken['DATA_ROOT'] = saved['DATA_ROOT']  # settings.py's is no folder: the training's
    bad = [k for k, v in taken.items() if v is config.WRONG]
    if bad:
        raise config.UserError(f'checkpoint {target} records {bad[0]}={config.short(saved[bad[0]])}'
                               f', not {config.takes(bad[0])} as settings.py has it (a hand-edited '
                               f'file?); give a file written by train.py.')
    config.apply(taken, owner=f'checkpoint {target}')
    try:
        config.check()
    except config.UserError as e:  # a value the checkpoint holds, not one of settings.py
        raise config.UserError(f'checkpoint {target} was trained with settings this code does '
                               f'not take: {str(e).split(";")[0]}; give another checkpoint.') \
            from None
    now = config.resolved()  # what is not kept was just taken from the checkpoint: the given
    given = {k: now[k] for k in config.differ(saved, network_settings(saved))}
    if processes.rank_world()[0] == 0:
        if taken:
            print(f'from the checkpoint: {config.text(taken)}', flush=True)
        if given:  # an ablation (trained at stride 16, scored at 8) or a slip: said either way
            print(f'given: {config.text(given)}; the checkpoint was trained with '
                  f'{config.text({k: saved[k] for k in given})}', flush=True)
    info = {'step': ckpt.get('step'), 'trained': saved,
            **{k: ckpt[k] for k in ('classes', 'palette') if k in ckpt}}
    return ckpt, info


def say_unused(given, phase, script, cuda, reasons=None):
    """One line for each setting `given` that `script` does not read in `phase` (config.unread),
    or that the settings make it skip (SLIDE_* when EVAL_MODE=whole, `reasons`)."""
    whole = {k: 'EVAL_MODE=whole infers each image whole' for k in ('SLIDE_CROP', 'SLIDE_STEP')
             if settings.EVAL_MODE == 'whole'}
    config.no_effect(given, {**config.unread(given, (phase,), script, cuda), **whole,
                             **(reasons or {})})


def fit_fix(trained, keep):
    """The fix of a checkpoint whose weights do not fit the network built for it, which recorded
    the settings `trained` (none: the original's files) and was loaded with the settings `keep`
    given (see restore)."""
    given = [k for k in network_settings(trained) if k in keep]
    if not trained:
        return 'pass the settings it was trained with as KEY=VALUE'
    if given:
        return (f'leave out {", ".join(given)}: it was trained with '
                f'{config.text({k: trained[k] for k in given})}')
    return 'its settings do not fit its own weights (a hand-edited file?), so give another one'


def network_settings(trained):
    """The settings a checkpoint that recorded `trained` defines at evaluation: those it
    recorded that the network reads (reads.phase('network')), but those evaluation sets itself
    (config.EVALUATION) and those that change how it runs, not what (config.HOW)."""
    defined = config.read_by('network') - set(config.EVALUATION + config.HOW)
    return [k for k in trained if k in defined]


def mode_name(trained, phase):
    """The name of the results of `phase` ('evaluation', 'prediction'): the inference mode, 'ss'
    or the scales ('ms0.5-1-1.5'), '_flip', '_slide<crop>-<step>' and '_bf16' when they apply,
    e.g. 'ms0.5-0.75-1-1.25-1.5-1.75_flip'; then, where the settings differ from those the
    checkpoint was `trained` with (settings.py's where it recorded none), '_os<STRIDE>' and a
    hash of the others the phase reads (DATA_ROOT, a knob of the test-time recipe; not those of
    config.HOW), so that no two results differ in name only."""
    import torch
    scales = tuple(settings.EVAL_SCALES)
    name = 'ss' if scales == (1.0,) else 'ms' + '-'.join(f'{s:g}' for s in scales)
    name += '_flip' if settings.EVAL_FLIP else ''
    if settings.EVAL_MODE == 'slide':
        name += f'_slide{settings.SLIDE_CROP}-{settings.SLIDE_STEP}'
    name += '_bf16' if torch.cuda.is_available() and settings.AMP else ''
    if trained.get('STRIDE', settings.STRIDE) != settings.STRIDE:
        name += f'_os{settings.STRIDE}'
    spelled = ('EVAL_SCALES', 'EVAL_FLIP', 'EVAL_MODE', 'SLIDE_CROP', 'SLIDE_STEP', 'AMP',
               'STRIDE', 'STAGE_NUM_EVAL', 'VAL_SPLIT', 'DATA_ROOT')
    was, now = {**config.read_settings_file(settings.__file__), **trained}, config.resolved()
    other = {k: now[k] for k in config.differ(was, [
        k for k in config.read_by(phase) if k in was and k not in spelled + config.HOW])}
    if 'DATA_ROOT' in trained and config.path(trained['DATA_ROOT']) != config.path(
            settings.DATA_ROOT):
        other['DATA_ROOT'] = config.path(settings.DATA_ROOT)
    if other:
        name += '_' + hashlib.sha256(repr(sorted(other.items())).encode()).hexdigest()[:6]
    return name

# ---------------------------------------------------------------------------- ImageNet weights


def read_imagenet(target):
    """The ImageNet ResNet file that PRETRAINED names, as {name: tensor} (DataParallel's
    'module.' dropped), checked to fit `target` ({name: tensor} of the backbone in the file's
    names) in full: one sentence naming the first thing that does not (its stem, a tensor
    missing, of another shape or too many)."""
    import torch
    path = config.named_file('PRETRAINED')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise config.UserError(f'ImageNet weights {path} cannot be read ({type(e).__name__}); '
                               f'download the file again.') from None
    state = state.get('state_dict', state) if isinstance(state, dict) else {}
    state = {k.removeprefix('module.'): v for k, v in state.items() if torch.is_tensor(v)}
    stem = 'deep' if 'conv1.0.weight' in state else 'torchvision' if 'conv1.weight' in state \
        else None
    lack = [k for k in target if k not in state and not k.endswith('num_batches_tracked')]
    shape = [k for k in target if k in state and state[k].shape != target[k].shape]
    extra = [k for k in state if k not in target and not k.startswith('fc.')]
    fix = 'give the matching ResNet file'
    if stem != settings.STEM:
        problem = (f" hold a {stem!r}-stem ResNet file but STEM={settings.STEM!r}; set "
                   f"STEM='{stem}'") if stem else \
            f' hold no ResNet stem but STEM={settings.STEM!r}; give a ResNet ImageNet file'
    elif lack:
        problem = f' lack {lack[0]!r}; the file does not fit N_LAYERS={settings.N_LAYERS}, {fix}'
    elif shape:
        problem = (f': {shape[0]!r} has shape {tuple(state[shape[0]].shape)}, the backbone '
                   f'needs {tuple(target[shape[0]].shape)}; {fix}')
    elif extra:
        problem = (f' hold {len(extra)} tensors the backbone does not have (first: '
                   f'{extra[0]!r}); give the ResNet-{settings.N_LAYERS} file')
    else:
        return state
    raise config.UserError(f'ImageNet weights {path}{problem}.')
