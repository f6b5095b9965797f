#!/usr/bin/env bash
# The GPU checks of the training path, as one script: bench_train.py for nano and base in bf16, eager and
# compiled, then one short nano training run with evaluation, tracked in MLflow, whose train/ metrics it prints.
#
#   bash benchmarks/gpu_check.sh DATA_ROOT [overrides ...]
#
# Environment: DEVICE (cuda), STEPS (200), PYTHON (.venv/bin/python), OUT (a new temporary folder). To prove it
# runs on a CPU with tiny settings: DEVICE=cpu STEPS=8 bash benchmarks/gpu_check.sh DATA train.batch_size=2
set -euo pipefail
root=$1
shift
device=${DEVICE:-cuda}
steps=${STEPS:-200}
python=${PYTHON:-.venv/bin/python}
out=${OUT:-$(mktemp -d)}
echo "date: $(date -u +%F)  host: $(hostname)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$device" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
"$python" -c "import torch; print('torch', torch.__version__)"

for model in nano base; do
    for compiled in "" --compile; do
        echo "== $model ${compiled:-eager}"
        "$python" benchmarks/bench_train.py "$root" --device "$device" --model "$model" --steps "$steps" \
            --rounds 1 $compiled "$@"
    done
done

echo "== nano, $steps steps with evaluation, tracked in $out/mlflow.db"
if [ "$device" = cpu ]; then export CUDA_VISIBLE_DEVICES=""; fi
"$python" -m ablate.cli train "data.root=$root" model=nano "train.steps=$steps" "train.out_dir=$out/nano" \
    "train.log_every=$(( steps / 4 > 0 ? steps / 4 : 1 ))" "tracking.uri=sqlite:///$out/mlflow.db" "$@"
"$python" - "$out/mlflow.db" <<'PY'
import sys

import mlflow

client = mlflow.MlflowClient(f"sqlite:///{sys.argv[1]}")
(run,) = client.search_runs([client.get_experiment_by_name("nano4m").experiment_id])
for key in ("train/tokens_per_s", "train/tflops", "train/mfu"):
    print(key, [round(m.value, 4) for m in client.get_metric_history(run.info.run_id, key)])
PY
