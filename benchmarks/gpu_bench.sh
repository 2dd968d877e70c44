#!/usr/bin/env bash
# GPU benchmark of the obfuscator (issue 7): `optin bench --device cuda` at batch 1 and at
# batches up to one that fills the card, the corpus-scale throughput (10 s utterances), and the
# CPU backends on the same machine for reference. One JSON object per line in $OUT/bench.jsonl.
#
# Usage (on a GPU machine, from the repository root):
#   MODEL=path/to/obfuscator OUT=results/ bash benchmarks/gpu_bench.sh
# MODEL defaults to an untrained obfuscator of the paper's size (same FLOPs, same speed).
# Packages the machine lacks (soundfile, soxr) can come as wheels in .whl/ (installed first).
set -uo pipefail
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD/src"
MODEL_ARGS=()
[ -n "${MODEL:-}" ] && MODEL_ARGS=(--model "$MODEL")
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" \
  | tee -a "$OUT/gpu.txt"

bench() {  # label, then optin bench arguments
  local label=$1; shift
  echo "== $label: $*" >&2
  python3 -m optin.cli bench "${MODEL_ARGS[@]}" "$@" --json \
    | python3 -c "import json,sys; d=json.load(sys.stdin); d['label']='$label'; print(json.dumps(d))" \
    >> "$OUT/bench.jsonl" || echo "{\"label\": \"$label\", \"failed\": true}" >> "$OUT/bench.jsonl"
}

# batch 1 (streaming) and growing batches of 1 s waveforms, up to one that fills the card
for b in 1 8 64 256 1024 4096; do
  bench "cuda-b$b-1s" --device cuda --batch "$b" --seconds 1 --repeats 20 --warmup 5
done
# corpus scale: 10 s utterances, large batches
for b in 256 1024; do
  bench "cuda-b$b-10s" --device cuda --batch "$b" --seconds 10 --repeats 10 --warmup 3
done
# the same machine's CPU, every backend, 1 thread and all threads, batch 1
bench "cpu-all-t1" --device cpu --backend all --threads 1 --repeats 20
bench "cpu-all-t16" --device cpu --backend all --repeats 20

python3 - "$OUT/bench.jsonl" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    d = json.loads(line)
    if d.get("failed"):
        print(f"{d['label']:<14} FAILED")
        continue
    print(f"{d['label']:<14} {d['backend']:<9} batch {d['batch']:>5} x {d['seconds']:>4} s: "
          f"{d['ms_per_audio_second']:.4f} ms/s audio (front-end incl. "
          f"{d['with_frontend_ms_per_audio_second']:.4f}), "
          f"{d['throughput_audio_seconds_per_second']:.0f} s audio/s, "
          f"{d['achieved_gflops']:.0f} GFLOP/s, peak mem {d['peak_memory_mb']:.0f} MB")
EOF
