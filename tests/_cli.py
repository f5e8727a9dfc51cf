"""A domain's console script, run in this process.

``formers-<domain>`` is ``Domain.main``; a fresh Python spends about 11 s importing torch, Lightning and torchmetrics
before it does anything (2-core AMD EPYC, torch 2.10), while a suite worker has them imported already. The end-to-end
CLI tests call ``main`` here with the script's arguments, working folder and ``sys.argv``, and get what a subprocess
gives: the exit status (``SystemExit``'s code; 1 with the traceback for an uncaught exception) and the text written
to standard output and error. The console scripts themselves are run as subprocesses by the README test
(``formers-core``), the domain tests and the packaging test.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path


def run_script(
    script: str, main: Callable[[list[str]], None], args: Sequence[str], cwd: Path
) -> subprocess.CompletedProcess:
    """``script args`` as ``main(args)`` in ``cwd``; returns its exit status, standard output and standard error."""
    out, err, returncode = io.StringIO(), io.StringIO(), 0
    argv = sys.argv
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        sys.argv = [script, *args]
        try:
            main(list(args))
        except SystemExit as exit_:
            if isinstance(exit_.code, str):  # sys.exit("message"): Python prints it and exits 1
                print(exit_.code, file=sys.stderr)
            returncode = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
        except Exception:  # noqa: BLE001  (a console script prints the traceback and exits 1)
            traceback.print_exc()
            returncode = 1
        finally:
            sys.argv = argv
    return subprocess.CompletedProcess([script, *args], returncode, out.getvalue(), err.getvalue())
