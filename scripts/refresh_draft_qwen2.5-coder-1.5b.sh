#!/usr/bin/env bash
# Refresh the shipped draft from replayed traffic: serve with capture on, replay prompts that no evaluation set
# holds, align on the capture, publish only if better on every task (models/drafts/fastdraft-qwen2.5-coder-1.5b,
# README.md: version 3 is this script run on version 2).
#
#   bash scripts/refresh_draft_qwen2.5-coder-1.5b.sh [RUN_DIR] [DRAFT]
#
# DRAFT (default: the shipped folder) is copied to RUN_DIR/published and is what the refresh must beat; the new
# draft is published there, never into the repository (copy openvino_model.* over by hand to ship it). About
# 35 minutes of a 2-core AVX-512 CPU for the replay (~150k tokens), 12 for alignment, 5 for evaluation.
# A rerun reuses the prompts and the capture it finds and resumes alignment.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/refresh-qwen2.5-coder-1.5b}
DRAFT=${2:-models/drafts/fastdraft-qwen2.5-coder-1.5b}
PY=${PYTHON:-.venv/bin/python}
PORT=${PORT:-8140}
mkdir -p "$RUN"

# 1. prompts in no evaluation set: ShareGPT chat past prompts/chat-sharegpt.jsonl's 40, its summarization
#    requests, function bodies from the packages of prompts/refresh-replay-code.sources.json, and the train
#    split of the shipped draft's own KD prompts (HumanEval, SOTU), so the refresh keeps what the draft knew
[ -s "$RUN/chat.jsonl" ] || "$PY" scripts/build_chat_prompts.py --skip 40 --count 640 --out "$RUN/chat.jsonl"
[ -s "$RUN/summarization.jsonl" ] || "$PY" scripts/build_chat_prompts.py --task summarization --count 100 \
    --out "$RUN/summarization.jsonl"
[ -s "$RUN/code.jsonl" ] || "$PY" scripts/build_code_prompts.py --sources prompts/refresh-replay-code.sources.json \
    --count 330 --out "$RUN/code.jsonl"
[ -s "$RUN/kd-train.jsonl" ] || "$PY" - "$RUN/kd-train.jsonl" <<'EOF'
import json, sys
from training.generate import load_prompt_set, split_prompts
train, _ = split_prompts(load_prompt_set("humaneval") + load_prompt_set("summarize-sotu"), 0.2)
with open(sys.argv[1], "w") as out:
    for prompt in train:  # tagged apart from the other code and summarization traffic, for per-task figures
        prompt["task"] = {"code": "humaneval", "summarization": "summarization-sotu"}[prompt["task"]]
        out.write(json.dumps(prompt) + "\n")
EOF

# 2. the default server with capture on, fed every prompt once (greedy, 128 tokens, 16 at once)
if [ ! -s "$RUN/replay.log" ]; then
    "$PY" -m server --port "$PORT" --draft "$DRAFT" --capture-dir "$RUN/capture" --max-running 16 > "$RUN/server.log" 2>&1 &
    SERVER=$!
    trap 'kill $SERVER 2>/dev/null || true' EXIT
    for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$PORT/health" > /dev/null && break; sleep 5; done
    "$PY" scripts/replay_traffic.py --url "http://127.0.0.1:$PORT" --prompts "$RUN/kd-train.jsonl" \
        --prompts "$RUN/chat.jsonl" --prompts "$RUN/summarization.jsonl" --prompts "$RUN/code.jsonl" \
        --interleave --concurrency 16 --max-tokens 128 | tee "$RUN/replay.log.tmp"
    mv "$RUN/replay.log.tmp" "$RUN/replay.log"
    kill $SERVER
    trap - EXIT
fi

# 3. align on the capture (the newest 10% held out), evaluate against DRAFT, publish only if better
[ -e "$RUN/published" ] || cp -r "$DRAFT" "$RUN/published"
exec "$PY" -m training.align --target qwen2.5-coder-1.5b-instruct --draft "$RUN/published" \
    --from-traffic "$RUN/capture" --out "$RUN/align" --kd-weight 0.5 \
    --steps 240 --batch-size 8 --seq-len 512 --lr 3e-4 --bf16 --threads 2 \
    --eval-prompts prompts/refresh-eval.jsonl --eval-limit 16 --eval-max-new-tokens 64 --publish "$RUN/published"
