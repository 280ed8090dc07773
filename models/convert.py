"""GGUF file -> Hugging Face model folder (config, float32 safetensors, repaired tokenizer).

Boundary: one local file in, one local folder out (written to `<out>.partial`, then renamed);
knows nothing about the catalog, pip or OpenVINO.

Precision: transformers dequantizes every GGUF tensor to float; we keep float32. The dequantized
values (scale * q + min, computed in float32) are not all representable in bfloat16/float16, so a
half-precision folder would no longer equal the GGUF model, and an `fp32` IR exported from it would
not be exact to it. Disk cost is 4 bytes/parameter (smollm2 0.5 GB, Qwen 0.5B 2 GB, Qwen 1.5B 7 GB);
int8/int4/fp16 IRs are all derived from this one exact folder.
"""

from __future__ import annotations

import gc
import logging
import shutil
import time
from pathlib import Path

from models.errors import ConversionError
from models.tokenizer_repair import check_tokenizer, repair_tokenizer

log = logging.getLogger(__name__)


def gguf_to_hf(gguf_path: str | Path, out_dir: str | Path, tokenizer_repair: str | None = None) -> Path:
    """Convert `gguf_path` to a Hugging Face folder at `out_dir` (float32), repairing its tokenizer.

    `tokenizer_repair` names a preset in `tokenizer_repair.REPAIRS` (None: leave the tokenizer as
    transformers derived it, only check that it round-trips). Peak RAM is about 5x the float32
    model size (the 1.5B Qwen needs ~9 GB).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    start = time.monotonic()
    log.info("converting %s to a Hugging Face folder (float32) at %s", gguf_path, out_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
        log.info("loaded and dequantized %s: %.0fM parameters in %.0f s", gguf_path.name,
                 model.num_parameters() / 1e6, time.monotonic() - start)
        model.save_pretrained(str(partial))
        tokenizer.save_pretrained(str(partial))
        del model
        gc.collect()
    except Exception as error:
        shutil.rmtree(partial, ignore_errors=True)
        raise ConversionError(f"transformers could not convert {gguf_path}: {type(error).__name__}: {error}") from error
    if tokenizer_repair is not None:
        repair_tokenizer(partial, tokenizer_repair)
    check_tokenizer(partial, tokenizer_repair, strict=tokenizer_repair is not None)
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
    log.info("converted %s in %.0f s", gguf_path.name, time.monotonic() - start)
    return out_dir
