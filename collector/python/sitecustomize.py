"""leakscope's ``sitecustomize``: ``leakscope run`` puts the folder holding this file first on
``PYTHONPATH`` of the command it runs (unless ``--no-torch-blocks``), so every Python process
of the command runs it at start-up.

It does two things and nothing visible:

1. unless ``LEAKSCOPE_TORCH_BLOCKS=0``, installs ``leakscope_torch``'s import hook, which
   waits for the program to import ``torch`` (it imports nothing of PyTorch itself);
2. runs the ``sitecustomize`` that Python would have run without leakscope (the next one on
   ``sys.path`` after this folder), exactly once, under the name ``sitecustomize``; its
   errors are its own and reach ``site`` as they would have.

Any error of leakscope's own is swallowed (``LEAKSCOPE_TORCH_DEBUG=1`` prints one line).
"""


def _leakscope_start():
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        if os.environ.get("LEAKSCOPE_TORCH_BLOCKS", "1") != "0":
            import leakscope_torch

            leakscope_torch.install()
    except Exception as e:  # noqa: BLE001 - never break the program
        if os.environ.get("LEAKSCOPE_TORCH_DEBUG") == "1":
            sys.stderr.write("leakscope: torch blocks off: %r\n" % (e,))
    _leakscope_chain(here, os, sys)


def _leakscope_chain(here, os, sys):
    """Runs the next ``sitecustomize`` on ``sys.path`` after ``here`` in place of this one."""
    try:
        import importlib.machinery
        import importlib.util

        def ours(entry):
            try:
                return os.path.samefile(entry or ".", here)
            except (OSError, ValueError, TypeError):
                return False

        paths = [p for p in sys.path if isinstance(p, str)]
        mine = [i for i, p in enumerate(paths) if ours(p)]
        rest = paths[mine[0] + 1:] if mine else paths
        rest = [p for p in rest if not ours(p)]
        spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
        if spec is None or spec.loader is None:
            return
        module = importlib.util.module_from_spec(spec)
    except Exception as e:  # noqa: BLE001 - leakscope's own failure: no chaining
        if os.environ.get("LEAKSCOPE_TORCH_DEBUG") == "1":
            sys.stderr.write("leakscope: cannot find the next sitecustomize: %r\n" % (e,))
        return
    # From here on the code is the program's: its errors propagate to `site`, which reports
    # them as it would have (the import system then drops the module, as it would have).
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


_leakscope_start()
