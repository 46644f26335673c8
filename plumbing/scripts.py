"""How a script runs from its start to its end: a mistake the user can fix (config.UserError)
ends it as one sentence with exit status 2, Ctrl-C and SIGTERM with 130 and how the same command
goes on, anything else with its traceback; under many processes the end is said once
(processes.Peers fills MANY); blocks that a signal must not cut in two."""
import contextlib
import functools
import os
import signal
import sys

from plumbing import config


def command(fn=None, *, go_on=None):
    """Decorate a script's main(argv): a UserError ends it with its sentence and exit status 2;
    Ctrl-C and SIGTERM (what cluster schedulers send) end it with exit status 130, outside an
    uninterrupted() block, and `interrupted; <go_on>` (a clause, or a function that returns one
    as the settings are then: how the same command goes on). In one of many processes (under
    torchrun) the run's end is said once, for all of them (see `ending`). The settings are as
    they were after it returns (main run in a test's process leaves none)."""
    if fn is None:
        return functools.partial(command, go_on=go_on)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in previous:
            signal.signal(s, _interrupt)
        try:
            with config.applied():
                try:
                    return fn(*args, **kwargs)
                except (Exception, KeyboardInterrupt) as e:
                    code, line = ending(e, go_on() if callable(go_on) else go_on)
                    if code is None:
                        raise  # not the user's: its traceback
            if line:
                print(line, file=sys.stderr, flush=True)
            sys.exit(code)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    return wrapper


# Set by processes.init_distributed when this process is one of many: `end` says how the run
# ended, once for all of its processes (processes.Peers.end).
MANY = {}


def ending(error, go_on=None):
    """(exit status, the line this process prints or None) for a script that stops on `error`:
    (2, 'error: <sentence>') for a UserError, (130, 'interrupted[; go_on]') for Ctrl-C or
    SIGTERM, (None, None) for anything else (a bug: its traceback). One of many processes asks
    MANY['end']; before it joins the others (a mistake in argv or settings.py, the same in
    every process) only the first process speaks."""
    if isinstance(error, config.UserError):
        message = str(error)
        if 'Original Traceback' in message:  # raised in a DataLoader worker: the sentence
            message = message.strip().splitlines()[-1].split('UserError: ', 1)[-1]
        code, line = 2, f'error: {message}'
    elif isinstance(error, KeyboardInterrupt):
        code, line = 130, 'interrupted' + (f'; {go_on}' if go_on else '')
    else:
        code, line = None, None
    if 'end' in MANY:
        return MANY['end'](error, code, line, go_on)
    return code, line if os.environ.get('RANK', '0') == '0' else None


_HOLD = {'depth': 0}  # inside uninterrupted(): its depth, and 'pending' once a signal came


def _interrupt(signum, frame):
    """Ctrl-C and SIGTERM: KeyboardInterrupt now, or at the end of an uninterrupted() block
    (a second one does not wait)."""
    if _HOLD['depth'] and not _HOLD.get('pending'):
        _HOLD['pending'] = True
    else:
        raise KeyboardInterrupt


@contextlib.contextmanager
def uninterrupted():
    """Inside, Ctrl-C and SIGTERM wait for the block's end, then stop the script as always: for
    library code with threads and queues (tensorboardX's writer), which a KeyboardInterrupt
    raised in its middle can leave waiting forever at the process's exit."""
    _HOLD['depth'] += 1
    try:
        yield
    finally:
        _HOLD['depth'] -= 1
        if not _HOLD['depth'] and _HOLD.pop('pending', False):
            raise KeyboardInterrupt


def _as_without_us():
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


# forked data loader workers die quietly on SIGTERM and take Ctrl-C as they would without us
os.register_at_fork(after_in_child=_as_without_us)
