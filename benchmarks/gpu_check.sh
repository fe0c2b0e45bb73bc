#!/usr/bin/env bash
# The whole GPU check in one short run (under 8 minutes): the CUDA tests, then python -m benchmarks.bench_gpu.
#
#     benchmarks/gpu_check.sh [RESULTS_DIR] [WHEEL_DIR]
#
# RESULTS_DIR (default: $OUT, else ./gpu_check_results) receives everything:
#     env.txt          GPU, driver, Python, torch / torchvision versions, missing packages
#     pip.txt          the offline installs (when WHEEL_DIR holds wheels)
#     cuda_tests.txt   pytest tests/test_cuda.py -rs (skips name their reason), cuda_tests.xml (JUnit)
#     bench_gpu.txt    the benchmark table (per-phase lines on the way), bench_gpu.json
#     summary.txt      the test count line, the benchmark table, exit status of each part
# Where CUDA is unavailable (a dry run on a CPU machine) the tests skip with the reason and the benchmark
# says so: the folder is written all the same.
#
# An offline GPU machine lacks some of detkit's dependencies (pycocotools, albumentations and theirs).
# WHEEL_DIR (default: $DETKIT_WHEELS, else ./wheels) may hold their wheels; prepare it on a machine
# with internet access, for the GPU machine's Python (3.12 here):
#     pip download --no-deps --python-version 3.12 --only-binary=:all: pycocotools faster-coco-eval albumentations \
#         albucore simsimd stringzilla pydantic pydantic-core annotated-types typing-inspection -d WHEEL_DIR
# The script then runs  pip install --no-deps --no-index WHEEL_DIR/*.whl  and
# pip install --no-deps --no-index --no-build-isolation -e .  (no build isolation: offline, the build
# backend already installed is used). The tests and the benchmark (run as a module from the repository root)
# import this checkout through PYTHONPATH either way.
set -u

cd "$(dirname "$0")/.."
RESULTS=${1:-${OUT:-gpu_check_results}}
WHEELS=${2:-${DETKIT_WHEELS:-wheels}}
PY=${PYTHON:-python}
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
START=$(date +%s)

{
    echo "gpu_check started $(date -u +%Y-%m-%dT%H:%M:%SZ) in $PWD"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || echo "nvidia-smi: not available"
} > "$RESULTS/env.txt"

if compgen -G "$WHEELS/*.whl" > /dev/null; then
    {
        "$PY" -m pip install --no-deps --no-index "$WHEELS"/*.whl
        "$PY" -m pip install --no-deps --no-index --no-build-isolation -e . \
            || echo "editable install failed: the checkout is used through PYTHONPATH"
    } > "$RESULTS/pip.txt" 2>&1
    echo "installed the wheels of $WHEELS (pip.txt)" >> "$RESULTS/env.txt"
else
    echo "no wheels in '$WHEELS': nothing installed" >> "$RESULTS/env.txt"
fi

"$PY" - >> "$RESULTS/env.txt" 2>&1 <<'EOF'
import importlib.util, platform
import torch, torchvision
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"torchvision {torchvision.__version__}, cuda available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print(f"device: {torch.cuda.get_device_name(0)}, bf16: {torch.cuda.is_bf16_supported()}")
missing = [m for m in ("numba", "cv2", "albumentations", "pycocotools", "scipy", "yaml", "tqdm")
           if importlib.util.find_spec(m) is None]
print("missing packages: " + (", ".join(missing) if missing else "none"))
EOF

timeout 300 "$PY" -m pytest tests/test_cuda.py -q -rs -p no:cacheprovider --junitxml="$RESULTS/cuda_tests.xml" \
    > "$RESULTS/cuda_tests.txt" 2>&1
TESTS_RC=$?

timeout 180 "$PY" -m benchmarks.bench_gpu --json "$RESULTS/bench_gpu.json" > "$RESULTS/bench_gpu.txt" 2>&1
BENCH_RC=$?

{
    echo "CUDA tests (exit $TESTS_RC$([ $TESTS_RC -eq 124 ] && echo ', time limit reached')):"
    tail -n 1 "$RESULTS/cuda_tests.txt"
    echo
    echo "bench_gpu.py (exit $BENCH_RC$([ $BENCH_RC -eq 124 ] && echo ', time limit reached')):"
    grep -v '^bench_gpu: [a-z]' "$RESULTS/bench_gpu.txt" || true
    echo
    echo "took $(( $(date +%s) - START )) s"
} > "$RESULTS/summary.txt"
cat "$RESULTS/summary.txt"
[ $TESTS_RC -eq 0 ] && [ $BENCH_RC -eq 0 ]
