#!/usr/bin/env bash
# Every GPU check of scoregen in one run: at most 8 minutes on one H100/H200 (each step has its own time
# limit, and a step that fails or runs out of time does not stop the others).
#
#   bash benchmarks/gpu_check.sh            # figures to $OUT, default results/gpu
#
# Steps (see benchmarks/README.md, "What a GPU run must check"):
#   1. sync        tests/test_gpu_sync.py: no host sync inside any fixed-step sampler loop
#   2. fp32        sampling throughput, fp32 eager, against diffusers' loops and the scipy PF-ODE
#   3. bf16        the same with bf16 autocast and CUDA graphs
#   4. train       digits U-Net training: steps/s and loss with bf16 autocast and in fp32
#   5. quality     quality vs NFE of the fast samplers beside diffusers' (benchmarks/quality_vs_nfe.py)
#   6. torchrun    sample and train under torchrun on the GPU (NCCL), one rank's per-call cost of the CIFAR-10
#                  U-Net at batch 500 and the 50k-sample projection (benchmarks/distributed_scaling.py)
# Outputs (10 files at most, what the device tool brings back): gpu_check.json (the GPU, each step's exit
# status and time, the training figures), gpu_check.log (everything printed), throughput_{fp32,bf16}.{json,png},
# quality_vs_nfe.{json,png}, distributed_cuda.{json,png}.
#
# Needs python3 with torch (CUDA), torchdiffeq, torchsde, scipy, matplotlib, tqdm, scikit-learn and pillow;
# diffusers is optional (its loops are skipped without it). A machine without network takes missing ones as
# wheels in .whl/ (installed to a temporary folder below), made once on a machine with network:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#       -d .whl torchsde==0.2.6 trampoline==0.1.2 diffusers importlib_metadata
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/gpu}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/scoregen-site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/scoregen-site"
fi
exec > >(tee "$OUT/gpu_check.log") 2>&1
WORK=$(mktemp -d)
declare -A RC SECONDS_OF

step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, record its exit status and time
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    echo "== $name (limit ${limit} s): $*"
    timeout --signal=INT --kill-after=10 "$limit" "$@"
    RC[$name]=$?
    SECONDS_OF[$name]=$((SECONDS - start))
    echo "== $name: exit ${RC[$name]} after ${SECONDS_OF[$name]} s"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"

step sync 60 python3 -m pytest -q -p no:cacheprovider tests/test_gpu_sync.py

BENCH=(python3 benchmarks/sampling_throughput.py --device cuda --models digits:64,1024@10,50,100 cifar32:64@10,50
       --pf-ode digits:64 --repeats 3 --note "benchmarks/gpu_check.sh")
step fp32 90 "${BENCH[@]}" --out "$OUT/throughput_fp32.json"
step bf16 90 "${BENCH[@]}" --dtype bf16 --cuda-graphs --out "$OUT/throughput_bf16.json"

echo '{"amp": false}' > "$WORK/fp32.json"
TRAIN=(python3 -m scoregen train --dataset digits --steps 600 --batch-size 128 --sample-every 0 --ckpt-every 0
       --device cuda --no-progress)
step train_bf16 50 "${TRAIN[@]}" --out "$WORK/bf16"
step train_fp32 50 "${TRAIN[@]}" --out "$WORK/fp32" --config "$WORK/fp32.json"

step quality 75 python3 benchmarks/quality_vs_nfe.py --device cuda --out "$OUT/quality_vs_nfe.json"

step torchrun 60 python3 benchmarks/distributed_scaling.py --device cuda --worlds 1 --n 20000 --chunk 500 \
    --repeats 5 --out "$OUT/distributed_cuda.json"

RCS=$(for k in "${!RC[@]}"; do printf '"%s": {"rc": %s, "seconds": %s}\n' "$k" "${RC[$k]}" "${SECONDS_OF[$k]}"; done)
python3 - "$OUT/gpu_check.json" "$WORK" "$RCS" <<'EOF'
import json, sys
from pathlib import Path

import torch

path, work, rcs = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
steps = json.loads("{" + ",".join(rcs.splitlines()) + "}")
train = {}
for run in ("bf16", "fp32"):
    log = work / run / "log.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    if rows:  # steps/s of the second half (after warm-up and cudnn autotuning), the last logged loss
        rates = [r["steps_per_s"] for r in rows[len(rows) // 2:]]
        train[run] = {"steps": rows[-1]["step"], "loss": rows[-1]["loss"], "steps_per_s": sum(rates) / len(rates)}
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
summary = {"gpu": gpu, "torch": torch.__version__, "steps": steps, "train_digits_batch128": train,
           "ok": all(s["rc"] == 0 for s in steps.values())}
path.write_text(json.dumps(summary, indent=1) + "\n")
print(json.dumps(summary, indent=1))
EOF
rm -rf "$WORK"
echo "figures in $OUT: $(ls "$OUT" | tr '\n' ' ')"
