#!/usr/bin/env bash
# The CUDA check, as one script for a machine with a GPU (the project's CI has none).
#
#   bench/gpu_check.sh OUT_DIR BASE_MODEL_DIR TICKETS_CSV
#
# 1. tests/model/test_gpu.py and the model lifecycle tests (device auto -> CUDA, fp16 training and serving,
#    hot swap freeing GPU memory);
# 2. bench/model_accuracy.py: all-MiniLM-L6-v2 fine-tuned on the whole training part of the shared
#    ticket set (80/20, seed 42) on the GPU, with the linear baseline's figure measured beside it;
# 3. bench/model_inference.py --device cuda: our batched fp16 classifier vs transformers.pipeline per
#    ticket on the same GPU, with the model fine-tuned in step 2.
# Each step has its own time limit so that one slow step leaves the others their time; results land
# in OUT_DIR as JSON and logs.
set -u
OUT_DIR=${1:?output directory}
BASE=${2:?base model directory}
DATA=${3:?ticket CSV}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT_DIR"

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    "$PY" -c 'import torch, transformers, sys; print(sys.version.split()[0], "torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
} 2>&1 | tee "$OUT_DIR/env.txt"

if [ -z "${SKIP_TESTS:-}" ]; then
    timeout 150 "$PY" -m pytest -q -p no:cacheprovider tests/model/test_gpu.py tests/model/test_lifecycle.py 2>&1 | tee "$OUT_DIR/pytest.log" | tail -15
fi

timeout "${ACCURACY_TIMEOUT:-330}" "$PY" bench/model_accuracy.py --part "${ACCURACY_PART:-transformer}" --data "$DATA" --base-model "$BASE" \
    --epochs "${EPOCHS:-3}" --lr "${LR:-1e-4}" --max-length "${MAX_LENGTH:-128}" --batch-size "${BATCH_SIZE:-32}" \
    --model-out /tmp/gpu_check_model --out "$OUT_DIR/accuracy.json" > "$OUT_DIR/accuracy.log" 2>&1
echo "accuracy rc=$?"
tail -c 1500 "$OUT_DIR/accuracy.json" 2>/dev/null

MODEL=$(ls -d /tmp/gpu_check_model/queue/* 2>/dev/null | head -1)
timeout 120 "$PY" bench/model_inference.py --device cuda --data "$DATA" --texts 2000 --max-length 256 \
    ${MODEL:+--model "$MODEL"} --json "$OUT_DIR/inference_gpu.json" > "$OUT_DIR/inference.log" 2>&1
echo "inference rc=$?"
cat "$OUT_DIR/inference_gpu.json" 2>/dev/null
