"""The machine a measurement ran on, in one line: CPU model, cores, and the vector extensions that decide
whether a verify of k+1 tokens costs what one step costs (AMX/AVX-512) or much more (AVX2 only)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

FLAGS_THAT_MATTER = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def describe_cpu() -> str:
    flags, model = set(), "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
    shown = [f for f in FLAGS_THAT_MATTER if f in flags]
    return f"{model}, {os.cpu_count()} cores, flags: {' '.join(shown) or 'none of avx2/avx512/amx'}"
