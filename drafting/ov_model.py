"""A stateful OpenVINO causal LM (as exported by optimum-intel), compiled once and shared by sessions.

Boundary: reads an IR folder, compiles it on the CPU and hands out `KVSession`s (drafting/kv_session.py),
each owning one infer request and so one KV cache. Knows nothing about tokenizers, proposers or sampling.

The graph gets one edit at load time: a `num_logits` input that slices the hidden states before the
output layer, so prefill of a long prompt does not compute (and copy) logits for every prompt position.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from drafting.errors import EngineError

log = logging.getLogger(__name__)

REQUIRED_INPUTS = ("input_ids", "attention_mask", "position_ids", "beam_idx")
NUM_LOGITS_INPUT = "num_logits"
_core: ov.Core | None = None


def core() -> ov.Core:
    global _core
    if _core is None:
        _core = ov.Core()
    return _core


def slice_hidden_before_lm_head(model: ov.Model) -> None:
    """Insert hidden[:, -num_logits:, :] in front of the output-layer MatMul."""
    logits = next((o for o in model.outputs if "logits" in o.get_names()), None)
    if logits is None:
        raise EngineError("the IR has no 'logits' output: not an optimum-intel causal-LM export")
    node = logits.get_node().input_value(0).get_node()
    while node.get_type_name() != "MatMul":  # skip Convert/Multiply (logit scaling) between MatMul and Result
        if node.get_input_size() == 0:
            raise EngineError("could not find the output-layer MatMul feeding 'logits'")
        node = node.input_value(0).get_node()
    hidden = node.input_value(0)
    num_logits = ops.parameter([1], ov.Type.i64, name=NUM_LOGITS_INPUT)
    num_logits.output(0).set_names({NUM_LOGITS_INPUT})
    start = ops.negative(num_logits)
    stop = ops.constant(np.array([np.iinfo(np.int64).max], dtype=np.int64))
    step = ops.constant(np.array([1], dtype=np.int64))
    axis = ops.constant(np.array([1], dtype=np.int64))
    node.input(0).replace_source_output(ops.slice(hidden, start, stop, step, axis).output(0))
    model.add_parameters([num_logits])
    model.validate_nodes_and_infer_types()


class StatefulCausalLM:
    """A compiled stateful causal LM. Thread-safe to share: each session owns its infer request."""

    def __init__(self, ir_dir: str | Path, precision: str | None = None, cache_dir: str | Path | None = None,
                 name: str | None = None, ov_config: dict | None = None):
        self.ir_dir = Path(ir_dir)
        self.name = name or self.ir_dir.name
        xml = self.ir_dir / "openvino_model.xml"
        if not xml.is_file():
            raise EngineError(f"{self.ir_dir} is not an OpenVINO IR folder: openvino_model.xml is missing")
        model = core().read_model(xml)
        names = {n for port in model.inputs for n in port.get_names()}
        missing = [n for n in REQUIRED_INPUTS if n not in names]
        if missing:
            raise EngineError(f"{xml} lacks inputs {missing}: export it as a stateful text-generation-with-past model")
        slice_hidden_before_lm_head(model)
        self.vocab_size = int(model.output("logits").get_partial_shape()[2].get_length())
        self.kv_seq_axes = self._kv_seq_axes(model)
        config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
        if precision:
            config["INFERENCE_PRECISION_HINT"] = precision
        if precision == "f32":
            # Full precision everywhere: at bf16 (or with int8-quantized activations) attention over a cache
            # holding masked rollback slots rounds differently from plain decoding's packed cache, which
            # flips argmax near-ties (scripts/exactness_ab.py).
            config.update({"KV_CACHE_PRECISION": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"})
        if cache_dir:
            config["CACHE_DIR"] = str(cache_dir)
        config.update(ov_config or {})
        self.compiled = core().compile_model(model, "CPU", config)
        self.max_context = self._max_context()
        log.info("compiled %s (vocab %d, context %d, precision %s)", self.name, self.vocab_size,
                 self.max_context, precision or "default")

    @staticmethod
    def _kv_seq_axes(model: ov.Model) -> dict[str, int]:
        """variable id -> sequence axis of its KV state: the last dynamic dimension ([batch, heads, seq, dim])."""
        axes = {}
        for op in model.get_ops():
            if op.get_type_name() == "ReadValue":
                shape = op.get_output_partial_shape(0)
                dynamic = [i for i in range(shape.rank.get_length()) if shape[i].is_dynamic]
                axes[op.get_variable_id()] = dynamic[-1]
        return axes

    def _max_context(self) -> int:
        config_path = self.ir_dir / "config.json"
        if config_path.is_file():
            config = json.loads(config_path.read_text())
            for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
                if key in config:
                    return int(config[key])
        return 2048

    @staticmethod
    def output_vocab_size(ir_dir: str | Path) -> int:
        """Size of the logits' last dimension, read without compiling."""
        model = core().read_model(Path(ir_dir) / "openvino_model.xml")
        return int(model.output("logits").get_partial_shape()[2].get_length())

    def new_session(self):
        from drafting.kv_session import KVSession

        return KVSession(self)
