"""TensorFlow's C++ start-up notices are kept out of stderr, and nothing else printed during the
import is lost (doodle.core.quiet_tensorflow). The real notices appear only on some CPUs, so the
mechanism is tested with a stand-in module that prints them on every machine."""

import subprocess
import sys
import textwrap

from doodle.core.quiet_tensorflow import filter_notices
from tests.conftest import REPO

NOTICES = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"I0000 00:00:1796379755.751803    1988 port.cc:153] oneDNN custom operations are on. You may see "
    b"slightly different numerical results due to floating-point round-off errors.",
    b"I0000 00:00:1733.12    77 cpu_feature_guard.cc:210] This TensorFlow binary is optimized to use "
    b"available CPU instructions in performance-critical operations.",
    b"To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, "
    b"rebuild TensorFlow with the appropriate compiler flags.",
]


def test_filter_drops_exactly_the_notices():
    other = [b"E0000 00:00:17.1  1 port.cc:9] a real error", b"Traceback (most recent call last):", b"x"]
    captured = b"\n".join([NOTICES[0], other[0], NOTICES[1], other[1], NOTICES[2], NOTICES[3], other[2]]) + b"\n"
    assert filter_notices(captured) == b"\n".join(other) + b"\n"
    assert filter_notices(b"".join(n + b"\n" for n in NOTICES)) == b""


def test_first_import_is_quiet_and_keeps_other_output(tmp_path):
    """A module that writes the notices and one other line to fd 2 from C-like code (os.write),
    and a Python warning, while it is imported: only the notices disappear, and fd 2 works after."""
    (tmp_path / "noisy.py").write_text(
        textwrap.dedent(
            f"""
            import os, warnings
            for line in {NOTICES!r}:
                os.write(2, line + b"\\n")
            os.write(2, b"kept line\\n")
            warnings.warn("kept warning")
            """
        )
    )
    script = textwrap.dedent(
        """
        import os, sys
        from doodle.core.quiet_tensorflow import QuietImport
        QuietImport("noisy").install()
        import noisy
        os.write(2, b"after\\n")
        print("imported", "noisy" in sys.modules)
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={"PYTHONPATH": f"{tmp_path}:{REPO}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == b"imported True"
    err = r.stderr.decode()
    assert "kept line" in err and "kept warning" in err and err.rstrip().endswith("after"), err
    assert "InitializeLog" not in err and "oneDNN" not in err and "cpu_feature_guard" not in err, err
