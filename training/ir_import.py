"""A served draft's OpenVINO IR back into a trainable Hugging Face folder, so a draft that ships only as IR (ours in
models/drafts/, or any draft a server runs) can be refreshed by `python -m training.align --draft <IR folder>`.

    python -m training.ir_import --ir models/drafts/fastdraft-qwen2.5-coder-1.5b --out runs/draft-hf

Boundary: reads an IR exported by optimum-intel (training/export.py, models/export.py) and writes an HF folder
(weights, config, tokenizer, the draft vocabulary map); knows nothing about training.

What the IR holds: every linear and embedding weight as a Constant named after its PyTorch parameter
(`self.<name>`), plain float or weight-compressed (uint8/int8/int4 codes with `<name>/zero_point` and
`<name>/scale`: w = (q - zero_point) * scale, per row or per group), and the small tensors (norm weights,
biases) as unnamed Constants. Those are found by their place in the graph: a projection's bias is the constant
added to its MatMul's output, and the RMSNorm weight in front of q_proj / gate_proj / the output layer is the
constant its input was multiplied by (a norm weight of ones or a bias of zeros is folded away by the converter,
and comes back as that identity). Compressed weights come back as their dequantized values, exactly what
the IR computes with; the import ends by checking that the HF model's logits match the IR's on a probe input.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger("training.ir_import")

PASS_THROUGH = {"Convert", "Reshape", "Transpose", "Unsqueeze", "Squeeze"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "generation_config.json", "vocab.json", "merges.txt")
MAX_LOGIT_GAP = 2e-2  # the HF model's logits may differ from the IR's by float rounding only


class IRImportError(ValueError):
    """The IR cannot be read back into a trainable model; the message says which tensor."""


def _constant_value(node) -> np.ndarray:
    return np.asarray(node.get_data(), dtype=np.float32)


def _consumers(node) -> list:
    return [target.get_node() for output in node.outputs() for target in output.get_target_inputs()]


def _producer(node, index: int):
    return node.input_value(index).get_node()


def _downstream(node, kind: str, depth: int = 8):
    """The first `kind` node reached from `node` through dequantization and shape-only nodes."""
    frontier = [node]
    for _ in range(depth):
        following = []
        for current in frontier:
            for consumer in _consumers(current):
                if consumer.get_type_name() == kind:
                    return consumer
                if consumer.get_type_name() in PASS_THROUGH | {"Subtract", "Multiply"}:
                    following.append(consumer)
        frontier = following
    return None


def _constant_behind(node):
    """The Constant feeding `node` through pass-through nodes, if any."""
    while node.get_type_name() in PASS_THROUGH:
        node = _producer(node, 0)
    return node if node.get_type_name() == "Constant" else None


def _multiplier_before(matmul, index: int = 0):
    """The constant that the MatMul's activation input was last multiplied by (an RMSNorm's weight)."""
    node = _producer(matmul, index)
    while node.get_type_name() in PASS_THROUGH:
        node = _producer(node, 0)
    if node.get_type_name() != "Multiply":
        return None
    for i in range(2):
        constant = _constant_behind(_producer(node, i))
        if constant is not None:
            return constant
    return None


def _bias_after(matmul):
    for consumer in _consumers(matmul):
        if consumer.get_type_name() == "Add":
            for i in range(2):
                constant = _constant_behind(_producer(consumer, i))
                if constant is not None:
                    return constant
    return None


def read_weights(xml: Path) -> dict[str, np.ndarray]:
    """HF parameter name -> float32 array, from the IR's constants (see the module docstring)."""
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    constants = {op.get_friendly_name(): op for op in model.get_ops() if op.get_type_name() == "Constant"}
    weights: dict[str, np.ndarray] = {}
    matmuls: dict[str, object] = {}
    for full_name, node in constants.items():
        if not full_name.startswith("self.") or full_name.endswith(("/scale", "/zero_point")):
            continue
        name = full_name[len("self."):]
        values = _constant_value(node)
        if full_name + "/scale" in constants:
            scale = _constant_value(constants[full_name + "/scale"])
            zero = constants.get(full_name + "/zero_point")
            values = (values - (_constant_value(zero) if zero is not None else 0.0)) * scale
            values = values.reshape(values.shape[0], -1) if values.ndim == 3 else values  # per-group codes
        weights[name] = values
        matmul = _downstream(node, "MatMul")
        if matmul is not None:
            matmuls[name] = matmul
    for name, matmul in list(matmuls.items()):
        bias = _bias_after(matmul) if name.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight")) else None
        if bias is not None:
            weights[name[: -len("weight")] + "bias"] = _constant_value(bias).reshape(-1)
        if name.endswith("self_attn.q_proj.weight"):
            norm = name.replace("self_attn.q_proj.weight", "input_layernorm.weight")
        elif name.endswith("mlp.gate_proj.weight"):
            norm = name.replace("mlp.gate_proj.weight", "post_attention_layernorm.weight")
        elif name in ("lm_head.weight", "model.embed_tokens.weight"):
            norm = "model.norm.weight"
        else:
            continue
        constant = _multiplier_before(matmul)
        if constant is not None:
            weights[norm] = _constant_value(constant).reshape(-1)
    return weights


def import_ir(ir_dir: str | Path, out_dir: str | Path, check: bool = True) -> Path:
    """Write `out_dir` (an HF folder training.draft_folder.load_draft reads) from the IR folder `ir_dir`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from training import vocab_map as vm
    from training.presets import reduce_output_layer

    ir_dir, out_dir = Path(ir_dir), Path(out_dir)
    xml = ir_dir / "openvino_model.xml"
    if not xml.exists() or not (ir_dir / "config.json").exists():
        raise IRImportError(f"{ir_dir}: needs openvino_model.xml and config.json (an IR folder exported by optimum-intel)")
    config = AutoConfig.from_pretrained(ir_dir)
    vocab = vm.load(ir_dir)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if vocab is not None and not vocab.input_reduced:
        reduce_output_layer(model, vocab.draft_vocab_size)
    weights = read_weights(xml)
    state = model.state_dict()
    tied = getattr(config, "tie_word_embeddings", False)
    for name, tensor in state.items():
        # the converter folds away a multiply by ones and an add of zeros, so an absent norm weight or bias is
        # the identity (the logit check below would catch anything else)
        if name not in weights and name.endswith("norm.weight"):
            weights[name] = np.ones(tuple(tensor.shape), dtype=np.float32)
        elif name not in weights and name.endswith(".bias"):
            weights[name] = np.zeros(tuple(tensor.shape), dtype=np.float32)
    missing = [name for name in state if name not in weights and not (tied and name == "lm_head.weight")]
    if missing:
        raise IRImportError(f"{xml}: no tensor found for {', '.join(missing[:5])}"
                           f"{f' and {len(missing) - 5} more' if len(missing) > 5 else ''}")
    loaded = {}
    for name, tensor in state.items():
        if tied and name == "lm_head.weight":
            continue
        value = weights[name]
        if value.size != tensor.numel():
            raise IRImportError(f"{xml}: {name} holds {value.shape}, the model expects {tuple(tensor.shape)}")
        loaded[name] = torch.from_numpy(value.reshape(tuple(tensor.shape)).copy())
    model.load_state_dict(loaded, strict=False)
    if tied:
        model.tie_weights()
    if check:
        gap = logit_gap(model, xml)
        if gap > MAX_LOGIT_GAP:
            raise IRImportError(f"{xml}: the imported model's logits differ from the IR's by {gap:.3g} "
                               f"(more than {MAX_LOGIT_GAP}): a tensor was matched to the wrong parameter")
        log.info("imported %s: logits within %.2g of the IR's", ir_dir, gap)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    for name in TOKENIZER_FILES + (vm.MAP_JSON, vm.MAP_NPY):
        if (ir_dir / name).exists():
            shutil.copy2(ir_dir / name, out_dir / name)
    (out_dir / "imported_from.json").write_text(json.dumps({"ir": str(ir_dir.resolve())}) + "\n")
    return out_dir


def logit_gap(model, xml: Path, length: int = 24) -> float:
    """Largest |logit| difference between the HF model and the IR on a fixed probe sequence (f32 inference and no
    dynamic quantization of activations, so both sides compute with the same dequantized weights)."""
    import openvino as ov
    import torch

    vocab_rows = model.get_input_embeddings().weight.shape[0]
    ids = np.random.default_rng(0).integers(0, vocab_rows, size=(1, length)).astype(np.int64)
    with torch.no_grad():
        expected = model(input_ids=torch.from_numpy(ids)).logits[0].numpy()
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"})
    request = compiled.create_infer_request()
    request.reset_state()
    inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": np.arange(length)[None]}
    names = {port.get_any_name() for port in compiled.inputs}
    if "beam_idx" in names:
        inputs["beam_idx"] = np.zeros(1, dtype=np.int32)
    actual = request.infer({k: v for k, v in inputs.items() if k in names})[compiled.output("logits")][0]
    return float(np.abs(actual - expected).max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.ir_import", description=__doc__.splitlines()[0])
    parser.add_argument("--ir", required=True, type=Path, help="IR folder (openvino_model.xml + config.json)")
    parser.add_argument("--out", required=True, type=Path, help="HF folder to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        print(import_ir(args.ir, args.out))
    except IRImportError as error:
        raise SystemExit(str(error)) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
