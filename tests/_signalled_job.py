"""Run a job's process, send it a signal after some batches, and collect what it printed.

The job prints ``RESTORED <batch time or None>`` once started and ``BATCH <time> <total>``
per batch (the interrupt and SIGTERM tests' jobs).
"""

from __future__ import annotations

import re
import subprocess


def signal_after_batches(
    argv: list[str], sig: int, batches: int, env: dict[str, str] | None = None
) -> tuple[str, list[tuple[int, int]], str, str, int]:
    """Run `argv`, send `sig` after `batches` batches: (RESTORED's word, [(batch time, total)], stdout, stderr, rc)."""
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        assert proc.stdout is not None
        lines: list[str] = []
        seen: list[tuple[int, int]] = []
        for line in proc.stdout:
            lines.append(line)
            if m := re.match(r"BATCH (\d+) (\d+)", line):
                seen.append((int(m[1]), int(m[2])))
                if len(seen) == batches:
                    proc.send_signal(sig)
                    break
        rest, err = proc.communicate(timeout=60)
    out = "".join(lines) + rest
    seen += [(int(a), int(b)) for a, b in re.findall(r"^BATCH (\d+) (\d+)$", rest, re.M)]  # the batch in progress
    restored = re.search(r"^RESTORED (\S+)$", out, re.M)
    assert restored is not None, f"the job did not start\nstdout:\n{out}\nstderr:\n{err}"
    return restored[1], seen, out, err, proc.returncode
