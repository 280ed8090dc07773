"""Export a Hugging Face causal-LM folder to a stateful OpenVINO IR folder with optimum-intel.

Boundary: takes a local folder, writes a local folder; never touches the network or the catalog.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

WEIGHT_FORMATS = ("int8", "int4", "fp16", "fp32")


def export_ir(hf_dir: str | Path, out_dir: str | Path, weight_format: str = "int8", convert_tokenizer: bool = True) -> Path:
    """Export `hf_dir` to `out_dir` (written to a temporary sibling, then renamed, so a crash leaves nothing half-done)."""
    if weight_format not in WEIGHT_FORMATS:
        raise ValueError(f"weight_format must be one of {', '.join(WEIGHT_FORMATS)}, got {weight_format!r}")
    from optimum.exporters.openvino import main_export
    from optimum.intel import OVConfig, OVWeightQuantizationConfig

    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    ov_config = None
    if weight_format in ("int8", "int4"):
        bits = 8 if weight_format == "int8" else 4
        ov_config = OVConfig(quantization_config=OVWeightQuantizationConfig(bits=bits))
    elif weight_format == "fp16":
        ov_config = OVConfig(dtype="fp16")
    log.info("exporting %s to OpenVINO IR (%s weights)", hf_dir, weight_format)
    main_export(
        str(hf_dir), str(partial), task="text-generation-with-past", ov_config=ov_config,
        convert_tokenizer=convert_tokenizer, library_name="transformers",
    )
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
    return out_dir
