#!/usr/bin/env bash
# Rebuild the shipped draft models/drafts/fastdraft-qwen2.5-coder-1.5b from nothing (see its README.md).
#
#   bash scripts/build_draft_qwen2.5-coder-1.5b.sh [RUN_DIR]
#
# The FastDraft recipe at our scale: corpus -> a 4-layer, 512-wide draft with a 30,720-token tied
# vocabulary, embeddings from an SVD of the target's -> pretraining on the corpus (131M tokens: ~5 min on
# one H100, days on a 2-core CPU: run this script on a GPU box, or only its `train` step there, see
# scripts/remote_train.py) -> the 1.5B target generates KD data -> KD alignment -> int8 IR -> the shipped
# folder. Each stage is resumable; a rerun skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/fastdraft-qwen2.5-coder-1.5b}
PY=${PYTHON:-.venv/bin/python}
HOME_DIR=${FASTDRAFT_HOME:-$HOME/.cache/fastdraft}
TARGET_HF=$HOME_DIR/models/qwen2.5-coder-1.5b-instruct/hf
CORPUS=$HOME_DIR/corpus/qwen2.5
SHIPPED=models/drafts/fastdraft-qwen2.5-coder-1.5b
mkdir -p "$RUN"

$PY -m fastdraft.cli models pull qwen2.5-coder-1.5b-instruct
[ -f "$CORPUS/manifest.json" ] || $PY -m training.corpus --tokenizer "$TARGET_HF" --out "$CORPUS"
# the initial weights: draft-50m preset, 30,720 most frequent corpus tokens + 1 unknown row, tied,
# embeddings projected from the target's (0 steps: only the init is written)
[ -f "$RUN/init/hf/config.json" ] || $PY -m training.pretrain --corpus "$CORPUS" --stage code-nl --preset draft-50m \
    --draft-vocab-size 30720 --reduce-input --embed-init svd --target-hf "$TARGET_HF" --steps 0 --out "$RUN/init"
# pretraining on code 0.7 / NL 0.3, 2,000 steps x 64 x 1,024 tokens, lr 1e-3 WSD, bf16
if [ ! -f "$RUN/pretrained/config.json" ]; then
    $PY scripts/remote_train.py pack --draft "$RUN/init/hf" --corpus "$CORPUS" --out "$RUN/bundle"
    $PY scripts/remote_train.py train --bundle "$RUN/bundle" --work "$RUN/train-work" --out "$RUN/train-result" \
        --train-embeddings --budget-s 330 --max-steps 2000 --batch-size 64 --seq-len 1024 --lr 1e-3
    $PY scripts/remote_train.py unpack-result --draft "$RUN/init/hf" --bundle "$RUN/bundle" \
        --result "$RUN/train-result" --out "$RUN/pretrained"
fi
# KD data: greedy target generations for HumanEval + SOTU summarization prompts (20% held out by id
# hash) and ShareGPT chat prompts disjoint from prompts/chat-sharegpt.jsonl (the first 96 are used)
[ -f "$RUN/chat-train.jsonl" ] || $PY scripts/build_chat_prompts.py --skip 40 --count 96 --out "$RUN/chat-train.jsonl"
$PY -m training.generate --target qwen2.5-coder-1.5b-instruct --prompts humaneval --prompts summarize-sotu \
    --out "$RUN/kd" --max-new-tokens 160 --batch-size 8
$PY -m training.generate --target qwen2.5-coder-1.5b-instruct --prompts "file:$RUN/chat-train.jsonl" \
    --eval-fraction 0 --out "$RUN/kd-chat" --max-new-tokens 160 --batch-size 8
# KD alignment (loss on output tokens only), int8 export
$PY -m training.align --target qwen2.5-coder-1.5b-instruct --draft "$RUN/pretrained" \
    --data "$RUN/kd/generations.jsonl" --data "$RUN/kd-chat/generations.jsonl" --out "$RUN/align" \
    --steps 110 --batch-size 8 --seq-len 384 --bf16 --lr 5e-4 --checkpoint-every 30 --skip-eval
# the shipped folder: IR + vocab map + tokenizer (for the vocabulary check); no OpenVINO tokenizer models
rm -rf "$SHIPPED.partial" && mkdir -p "$SHIPPED.partial"
for f in openvino_model.xml openvino_model.bin config.json generation_config.json draft_vocab_map.json \
         tokenizer.json tokenizer_config.json chat_template.jinja; do
    cp "$RUN/align/ir/$f" "$SHIPPED.partial/"
done
[ -f "$SHIPPED/README.md" ] && cp "$SHIPPED/README.md" "$SHIPPED.partial/"
rm -rf "$SHIPPED" && mv "$SHIPPED.partial" "$SHIPPED"
du -sb "$SHIPPED"
