#!/usr/bin/env bash
# Rebuild the shipped draft models/drafts/fastdraft-qwen2.5-coder-1.5b from nothing (see its README.md).
#
#   bash scripts/build_draft_qwen2.5-coder-1.5b.sh [RUN_DIR]
#
# The FastDraft recipe at our scale: corpus -> a 4-layer, 512-wide draft with a 30,720-token tied
# vocabulary, embeddings from an SVD of the target's -> pretraining on the corpus (131M tokens: ~5 min on
# one H100) -> more pretraining on 32.6M tokens of code and prose it has not seen (105M tokens: ~4 min
# on one H100) -> the 1.5B target generates KD data -> KD alignment -> int8 IR -> the
# shipped folder. The two pretraining stages take days on a 2-core CPU: run this script on a GPU box, or
# only their `train` steps there (scripts/remote_train.py). Each stage is resumable; a rerun skips what is
# done.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/fastdraft-qwen2.5-coder-1.5b}
PY=${PYTHON:-.venv/bin/python}
HOME_DIR=${FASTDRAFT_HOME:-$HOME/.cache/fastdraft}
TARGET_HF=$HOME_DIR/models/qwen2.5-coder-1.5b-instruct/hf
CORPUS=$HOME_DIR/corpus/qwen2.5        # the first 6 sources of training/corpus_sources.json (10.8M tokens)
CORPUS2=$HOME_DIR/corpus/qwen2.5-v2    # all of them (40.0M tokens)
FIRST_SOURCES="shakespeare sotu brown python-stdlib numpy requests"
SHIPPED=models/drafts/fastdraft-qwen2.5-coder-1.5b
mkdir -p "$RUN"

$PY -m fastdraft.cli models pull qwen2.5-coder-1.5b-instruct
[ -f "$CORPUS/manifest.json" ] || $PY -m training.corpus --tokenizer "$TARGET_HF" --out "$CORPUS" --only $FIRST_SOURCES
[ -f "$CORPUS2/manifest.json" ] || $PY -m training.corpus --tokenizer "$TARGET_HF" --out "$CORPUS2"
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
# stage 2: the same network on the sources stage 1 did not see (29 PyPI packages' code, the Python docs)
# plus SOTU and Brown prose: 1,605 steps x 64 x 1,024 (105M tokens, ~3.2 passes), lr 6e-4 WSD, bf16, all
# weights. (Growing it to 8 layers first, --grow-layers 8, accepted a little more and ran slower: model card.)
if [ ! -f "$RUN/continued/config.json" ]; then
    SECOND_SOURCES=$($PY -c "import json, sys; print(','.join(s['name'] for s in json.load(open(sys.argv[1]))['sources']
        if s['name'] not in ('shakespeare', 'python-stdlib', 'numpy', 'requests')))" "$CORPUS2/manifest.json")
    $PY scripts/remote_train.py pack --draft "$RUN/pretrained" --corpus "$CORPUS2" --out "$RUN/bundle2" \
        --weights int8 --sources "$SECOND_SOURCES"
    $PY scripts/remote_train.py train --bundle "$RUN/bundle2" --work "$RUN/train2-work" --out "$RUN/train2-result" \
        --train-embeddings --budget-s 400 --max-steps 1605 --batch-size 64 --seq-len 1024 --lr 6e-4 \
        --checkpoint-every 200
    $PY scripts/remote_train.py unpack-result --draft "$RUN/pretrained" --bundle "$RUN/bundle2" \
        --result "$RUN/train2-result" --out "$RUN/continued"
fi
# KD data: greedy target generations for HumanEval + SOTU summarization prompts (20% held out by id
# hash) and ShareGPT chat prompts disjoint from prompts/chat-sharegpt.jsonl (the first 96 are used)
[ -f "$RUN/chat-train.jsonl" ] || $PY scripts/build_chat_prompts.py --skip 40 --count 96 --out "$RUN/chat-train.jsonl"
$PY -m training.generate --target qwen2.5-coder-1.5b-instruct --prompts humaneval --prompts summarize-sotu \
    --out "$RUN/kd" --max-new-tokens 160 --batch-size 8
$PY -m training.generate --target qwen2.5-coder-1.5b-instruct --prompts "file:$RUN/chat-train.jsonl" \
    --eval-fraction 0 --out "$RUN/kd-chat" --max-new-tokens 160 --batch-size 8
# KD alignment (loss on output tokens only), int8 export
$PY -m training.align --target qwen2.5-coder-1.5b-instruct --draft "$RUN/continued" \
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
