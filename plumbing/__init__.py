"""The plumbing under the scripts: settings and their checks (config), the processes, files
written without loss, whose outputs are whose, run records, checkpoints, pictures, the inference
path and what preparations share. A researcher's idea lives in settings.py and the card's files
beside this folder (network.py, train.py, dataset.py, transforms.py, eval.py), not here."""
from plumbing import config  # noqa: F401  first of all: a broken settings.py is one sentence
