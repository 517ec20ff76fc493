"""The marker of errors caused by the user's inputs (params, data files, checkpoints, hardware asked for).

Stage entry points print these as one clear line and exit 1 instead of showing a traceback. Each error
class lives beside the code that raises it and also derives from `InputError`, so the entry points need
not import (and DVC stages need not depend on) every module that can raise one.
"""


class InputError(Exception):
    """Base of every error whose message tells the user which input to fix."""
