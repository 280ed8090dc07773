"""A causal LM in OpenVINO's PagedAttention form: many sequences per call, their KV in a shared block pool.

Boundary: reads an optimum-intel IR folder, converts it with `paged_attention_transformation` (what
openvino-genai's continuous batching runs), compiles it on the CPU, owns the KV cache tensors (and the
`BlockPool` that numbers their blocks) and runs one call for a batch described by `PagedBatch`. It knows
block numbers and lengths, not which sequence owns which block (drafting/blocks.py) nor who runs
(drafting/engine.py).

The paged IR takes every sequence's new tokens flat (`input_ids`, `position_ids`), each sequence's cached
length (`past_lens`) and blocks (`block_indices` + `block_indices_begins`), and per layer a
`key_cache.N`/`value_cache.N` tensor of shape [num_blocks, kv_heads, block_size, head_dim]. A sequence is
rolled back by giving it a shorter `past_lens` next call: the rejected slots are overwritten, never masked,
so attention always runs over exactly the kept tokens (the numerics of plain decoding).

One graph edit at load time: a `logits_indices` input gathers the rows that need logits (the last prompt
token, a verify's k+1 rows) before the output layer, so a long prefill does not compute logits per token.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops
from openvino._offline_transformations import paged_attention_transformation

from drafting.blocks import BlockPool
from drafting.errors import EngineError

log = logging.getLogger(__name__)

LOGITS_INDICES_INPUT = "logits_indices"
_core: ov.Core | None = None


def core() -> ov.Core:
    global _core
    if _core is None:
        _core = ov.Core()
    return _core


@dataclass
class PagedBatch:
    """One call's inputs, sequence by sequence (the runner flattens them)."""

    tokens: list[list[int]]  # new tokens per sequence (at least one each)
    past_lens: list[int]  # tokens already cached per sequence; the new ones go at positions past_len, ...
    block_tables: list[list[int]]  # per sequence, its blocks in order; they must cover past_len + new tokens
    logit_rows: list[int]  # per sequence, how many of its last new tokens need logits (0: none)


def gather_rows_before_lm_head(model: ov.Model) -> None:
    """Insert Gather(hidden, logits_indices, axis 0) in front of the output-layer MatMul."""
    logits = next((o for o in model.outputs if "logits" in o.get_names()), None)
    if logits is None:
        raise EngineError("the IR has no 'logits' output: not an optimum-intel causal-LM export")
    node = logits.get_node().input_value(0).get_node()
    while node.get_type_name() != "MatMul":  # skip Convert/Multiply (logit scaling) between MatMul and Result
        if node.get_input_size() == 0:
            raise EngineError("could not find the output-layer MatMul feeding 'logits'")
        node = node.input_value(0).get_node()
    hidden = node.input_value(0)  # [tokens, 1, hidden] in the paged form
    indices = ops.parameter([-1], ov.Type.i64, name=LOGITS_INDICES_INPUT)
    indices.output(0).set_names({LOGITS_INDICES_INPUT})
    axis = ops.constant(np.array(0, dtype=np.int64))
    node.input(0).replace_source_output(ops.gather(hidden, indices, axis).output(0))
    model.add_parameters([indices])
    model.validate_nodes_and_infer_types()


def compile_config(precision: str | None, cache_dir: str | Path | None, ov_config: dict | None) -> dict:
    config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    if precision == "f32":  # full precision everywhere, the KV cache and the activations of int8 matmuls too
        config.update({"KV_CACHE_PRECISION": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"})
    if cache_dir:
        config["CACHE_DIR"] = str(cache_dir)
    config.update(ov_config or {})
    return config


class PagedCausalLM:
    """A compiled paged LM and its KV block tensors. One caller at a time (the engine's step loop)."""

    def __init__(self, ir_dir: str | Path, num_blocks: int | None = None, kv_cache_bytes: int | None = None,
                 precision: str | None = None, cache_dir: str | Path | None = None, name: str | None = None,
                 ov_config: dict | None = None):
        self.ir_dir = Path(ir_dir)
        self.name = name or self.ir_dir.name
        self.precision = precision
        xml = self.ir_dir / "openvino_model.xml"
        if not xml.is_file():
            raise EngineError(f"{self.ir_dir} is not an OpenVINO IR folder: openvino_model.xml is missing")
        model = core().read_model(xml)
        names = {n for port in model.inputs for n in port.get_names()}
        if "beam_idx" not in names or "position_ids" not in names:
            raise EngineError(f"{xml} is not a stateful text-generation-with-past export (no beam_idx/position_ids)")
        self.vocab_size = int(model.output("logits").get_partial_shape()[2].get_length())
        paged_attention_transformation(model)
        gather_rows_before_lm_head(model)
        self.compiled = core().compile_model(model, "CPU", compile_config(precision, cache_dir, ov_config))
        self.request = self.compiled.create_infer_request()
        self.max_context = self._max_context()
        self._cache_inputs = [port for port in self.compiled.inputs
                              if port.get_any_name().startswith(("key_cache.", "value_cache."))]
        if not self._cache_inputs:
            raise EngineError(f"{xml}: the paged conversion produced no key_cache/value_cache inputs")
        first = self._cache_inputs[0].get_partial_shape()
        self.block_size = int(first[2].get_length())
        self.cache_type = self._cache_inputs[0].get_element_type()
        # bytes one block takes over all layers' K and V (every dimension but the first is static once compiled)
        self.block_bytes = sum(self.cache_type.size * int(np.prod([port.get_partial_shape()[d].get_length()
                                                                     for d in (1, 2, 3)]))
                               for port in self._cache_inputs)
        if num_blocks is None:
            num_blocks = self.blocks_for(kv_cache_bytes if kv_cache_bytes else 512 * 2 ** 20)
        self.num_blocks = max(2, int(num_blocks))
        for port in self._cache_inputs:
            shape = [self.num_blocks] + [port.get_partial_shape()[d].get_length() for d in (1, 2, 3)]
            self.request.set_tensor(port, ov.Tensor(self.cache_type, ov.Shape(shape)))
        # the pool that hands out these tensors' blocks: one per model, so engines that share a model share it
        self.pool = BlockPool(self.num_blocks, self.block_size)
        self._max_context_len = ov.Tensor(ov.Type.i32, ov.Shape([]))
        self.request.set_tensor("max_context_len", self._max_context_len)
        log.info("compiled %s (paged: vocab %d, context %d, %d blocks of %d tokens, %.0f MiB of %s KV, precision %s)",
                 self.name, self.vocab_size, self.max_context, self.num_blocks, self.block_size,
                 self.num_blocks * self.block_bytes / 2 ** 20, self.cache_type, precision or "default")

    def blocks_for(self, kv_cache_bytes: int) -> int:
        return max(2, kv_cache_bytes // self.block_bytes)

    def _max_context(self) -> int:
        config_path = self.ir_dir / "config.json"
        if config_path.is_file():
            config = json.loads(config_path.read_text())
            for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
                if key in config:
                    return int(config[key])
        return 2048

    def forward(self, batch: PagedBatch) -> np.ndarray:
        """Run one call; returns logits [sum(logit_rows), vocab], sequence by sequence, a view valid until the next call."""
        count = len(batch.tokens)
        assert count >= 1 and len(batch.past_lens) == len(batch.block_tables) == len(batch.logit_rows) == count
        lengths = np.fromiter((len(t) for t in batch.tokens), dtype=np.int32, count=count)
        assert lengths.min() >= 1, "every sequence in a call feeds at least one token"
        past = np.asarray(batch.past_lens, dtype=np.int32)
        for n, p, table in zip(lengths, past, batch.block_tables):
            assert len(table) * self.block_size >= p + n, (len(table), p, n)
        begins = np.zeros(count + 1, dtype=np.int32)
        np.cumsum(lengths, out=begins[1:])
        input_ids = np.fromiter((t for seq in batch.tokens for t in seq), dtype=np.int64, count=int(begins[-1]))
        position_ids = np.concatenate([np.arange(p, p + n, dtype=np.int64) for p, n in zip(past, lengths)])
        block_indices = np.fromiter((b for table in batch.block_tables for b in table), dtype=np.int32)
        block_begins = np.zeros(count + 1, dtype=np.int32)
        np.cumsum([len(table) for table in batch.block_tables], out=block_begins[1:])
        rows = [np.arange(begins[i + 1] - r, begins[i + 1], dtype=np.int64) for i, r in enumerate(batch.logit_rows) if r]
        logits_indices = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        if logits_indices.size == 0:  # nothing needs logits (a middle prefill chunk): still one row, unused
            logits_indices = np.array([begins[-1] - 1], dtype=np.int64)
        self._max_context_len.data[...] = int((past + lengths).max())
        request = self.request
        for name, array in (("input_ids", input_ids), ("position_ids", position_ids), ("past_lens", past),
                            ("subsequence_begins", begins), ("block_indices", block_indices),
                            ("block_indices_begins", block_begins), (LOGITS_INDICES_INPUT, logits_indices)):
            request.set_tensor(name, ov.Tensor(array, shared_memory=True))
        request.start_async()
        request.wait()
        logits = request.get_tensor("logits").data  # [rows, 1, vocab]
        return logits[:, 0, :] if sum(batch.logit_rows) else logits[:0, 0, :]

    @staticmethod
    def output_vocab_size(ir_dir: str | Path) -> int:
        """Size of the logits' last dimension, read without compiling."""
        model = core().read_model(Path(ir_dir) / "openvino_model.xml")
        return int(model.output("logits").get_partial_shape()[2].get_length())
