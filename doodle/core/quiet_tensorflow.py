"""Keep TensorFlow's C++ start-up notices out of every stage's stderr.

``TF_CPP_MIN_LOG_LEVEL`` hides TensorFlow's INFO and WARNING log lines once its logging is set
up, but two notices are printed while its shared libraries load, before that: on CPUs with
AVX-512 (and some others) ``WARNING: All log messages before absl::InitializeLog() is called are
written to STDERR`` and ``I... port.cc:...] oneDNN custom operations are on ...``, each once per
library, whatever the level. ``TF_ENABLE_ONEDNN_OPTS=0`` would silence the second, but it also
switches the kernels off and so changes numerics and speed.

Instead, :func:`install` puts a finder in front of ``sys.meta_path`` that runs the first import of
``tensorflow`` (however it is reached: ``import keras``, ``import tensorflow``) with file
descriptor 2 pointed at a temporary file, then writes everything captured back to stderr except
those notices (the absl line, and INFO or WARNING lines from ``port.cc`` and
``cpu_feature_guard.cc``: oneDNN and CPU features). So anything else printed during the import (an
error, a Python warning) is kept, and TensorFlow's kernels are untouched.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

# The notices printed while the libraries load, before TF_CPP_MIN_LOG_LEVEL applies.
START_UP_NOTICE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|[IW]\d{4} [\d:.]+\s+\d+ (port|cpu_feature_guard)\.cc:\d+\] .*"
    rb"|To enable the following instructions: .*)$"  # the second line of cpu_feature_guard's notice
)


def filter_notices(captured: bytes) -> bytes:
    """``captured`` without the start-up notice lines; every other line is kept, in order."""
    lines = captured.splitlines(keepends=True)
    return b"".join(line for line in lines if not START_UP_NOTICE.match(line.rstrip(b"\r\n")))


class _QuietLoader(importlib.abc.Loader):
    """Wraps TensorFlow's own loader: the module is created and executed by it, with fd 2
    captured around the execution."""

    def __init__(self, loader: importlib.abc.Loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 2)
            try:
                self._loader.exec_module(module)
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                capture.seek(0)
                kept = filter_notices(capture.read())
                if kept:
                    os.write(2, kept)


class QuietImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: on the first import of module ``name``, it asks the other finders
    for the spec and hands it back with the loader wrapped, then leaves ``sys.meta_path``."""

    def __init__(self, name: str):
        self.name = name

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        self.uninstall()
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec

    def install(self) -> None:
        """A no-op once the module is imported, or when already installed."""
        if self.name not in sys.modules and self not in sys.meta_path:
            sys.meta_path.insert(0, self)

    def uninstall(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)


_TENSORFLOW = QuietImport("tensorflow")


def install() -> None:
    """Quiet the first TensorFlow import of this process (a no-op once TensorFlow is imported).
    Also sets ``TF_CPP_MIN_LOG_LEVEL=2`` unless the user chose a level, for the notices printed
    after start-up (e.g. tf.data's generator memory patch)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _TENSORFLOW.install()
