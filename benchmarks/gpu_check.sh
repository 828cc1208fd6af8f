#!/usr/bin/env bash
# One-command GPU check: the gpu-marked tests, then the prefill sweep on CUDA in bfloat16 on a
# Llama-3-8B-shaped model with random weights (built from a config, nothing downloaded) at 8k,
# 32k and 64k tokens, with 128k tried last (kept if it fits in memory and time). About 8 minutes
# at most; every file goes under one folder.
#
#   benchmarks/gpu_check.sh [OUT_DIR] [--tiny]
#
#   OUT_DIR   output folder (default gpu-check-<date>-<time>)
#   --tiny    the same steps on CPU with random:tiny at short lengths, in seconds (also
#             GPU_CHECK_TINY=1): a check of this script where there is no GPU
#
# Steps: environment (versions, the GPU; stops the check if there is no CUDA device outside
# --tiny), gpu tests (pytest -m gpu, at most 3 minutes), vllm tests (the vLLM plugin on CUDA:
# tests/test_vllm_gpu.py in the vLLM environment, GPU_CHECK_VLLM_PYTHON or .venv-vllm, at most
# 5 minutes; skipped in --tiny mode or without vllm there; vllm.log), sweep (benchmarks/prefill.py: stock,
# classic and sra defaults, 2 interleaved rounds per length, peak memory from
# torch.cuda.max_memory_allocated, decode latency over 8 rounds of 4 greedy steps at 64k and 128k; the
# JSON is rewritten after every length and the run is cut at the time budget, so a 128k that
# does not fit or finish leaves the shorter lengths in place), then summary.md.
#
# Environment: GPU_CHECK_PYTHON (default .venv/bin/python, else python3); GPU_CHECK_SWEEP_ARGS,
# extra options for benchmarks/prefill.py, appended (e.g. "--max-chunk-mib 1024": larger chunks
# are fewer, larger matrix products); GPU_CHECK_BUDGET_S, the time limit of the whole check in
# seconds (default 470; each step gets what is left, at least a minute).
#
# Files in OUT_DIR: env.txt, pytest.log, sweep.log, sweep.json, sweep.md (the table),
# sweep.png (the plot), steps.tsv (each step's exit status and seconds) and summary.md.
#
# Exit status: 0 when the tests pass and every length but the optional largest one was
# measured without error; 1 when a step failed (summary.md and the other steps' files are
# still written); 2 for a usage error or a failed environment step (outside --tiny: no CUDA).
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

TINY=${GPU_CHECK_TINY:-0}
OUT=""
for arg in "$@"; do
    case "$arg" in
        --tiny) TINY=1 ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "gpu_check.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
        *) if [[ -n "$OUT" ]]; then echo "gpu_check.sh: one output folder only" >&2; exit 2; fi; OUT=$arg ;;
    esac
done
[[ "$TINY" == 1 ]] || TINY=0
OUT=${OUT:-gpu-check-$(date +%Y%m%d-%H%M%S)}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${GPU_CHECK_PYTHON:-}
if [[ -z "$PYTHON" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
# The vLLM plugin's gpu tests run in the vLLM environment (GPU_CHECK_VLLM_PYTHON, default .venv-vllm),
# skipped when it has no vllm.
VLLM_PYTHON=${GPU_CHECK_VLLM_PYTHON:-}
if [[ -z "$VLLM_PYTHON" && -x "$ROOT/.venv-vllm/bin/python" ]]; then VLLM_PYTHON="$ROOT/.venv-vllm/bin/python"; fi
BUDGET_S=${GPU_CHECK_BUDGET_S:-470}
read -r -a EXTRA <<< "${GPU_CHECK_SWEEP_ARGS:-}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error

if [[ "$TINY" == 1 ]]; then
    MODE=tiny
    SWEEP=(--model random:tiny --device cpu --dtype float32 --tokens 128,256 --optional-tokens 512
           --decode-tokens 256,512 --repeats 1 --decode-rounds 2 --decode-steps 2 --threads 1 --skip-memory
           --config classic:min_length=0 --config sra:begin_length=8,threshold_len=16)
else
    MODE=cuda
    SWEEP=(--model random:llama3-8b --device cuda --dtype bfloat16 --tokens 8192,32768,65536
           --optional-tokens 131072 --decode-tokens 65536,131072 --repeats 2 --decode-rounds 8 --decode-steps 4)
fi

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$ROOT"
: > "$OUT/steps.tsv"
echo "gpu_check.sh: mode $MODE, python $PYTHON, output $OUT, budget ${BUDGET_S}s"

# run_step NAME LOG LIMIT_S COMMAND...: run, tee into LOG, record "NAME rc seconds LOG" in steps.tsv.
# A failing step does not stop the check; the summary decides the exit status.
run_step() {
    local name=$1 log=$2 limit=$3 rc=0 start=$SECONDS
    shift 3
    echo "==> [$name] $* (limit ${limit}s, log $log)"
    timeout --kill-after=15 "$limit" "$@" 2>&1 | tee "$OUT/$log" || rc=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" "$log" >> "$OUT/steps.tsv"
    echo "<== [$name] exit status $rc after $((SECONDS - start))s"
}

left() {   # left MIN [MAX]: the seconds of the budget left, at least MIN and at most MAX
    local rest=$((BUDGET_S - SECONDS)) low=$1 high=${2:-0}
    if (( rest < low )); then rest=$low; fi
    if (( high > 0 && rest > high )); then rest=$high; fi
    echo "$rest"
}

run_step environment env.txt 60 "$PYTHON" - "$MODE" <<'EOF'
import datetime, importlib.metadata, platform, sys
import torch
print(f"date {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
print(f"python {platform.python_version()}, torch {torch.__version__}, "
      f"transformers {importlib.metadata.version('transformers')}")
print(f"machine {platform.machine()} {platform.platform()}")
cuda = torch.cuda.is_available()
print(f"cuda {cuda}" + (f", {torch.cuda.device_count()} device(s)" if cuda else ""))
if cuda:
    p = torch.cuda.get_device_properties(0)
    print(f"gpu {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}, "
          f"bfloat16 {torch.cuda.is_bf16_supported()}")
if sys.argv[1] == "cuda" and not cuda:
    print("no CUDA device: run on a GPU machine, or use --tiny to check this script on CPU")
    sys.exit(3)
EOF
ENV_RC=$(tail -n 1 "$OUT/steps.tsv" | cut -f2)

if [[ "$ENV_RC" == 0 ]]; then
    run_step "gpu tests" pytest.log "$(left 60 180)" "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider
    if [[ "$TINY" == 0 && -n "$VLLM_PYTHON" ]] && "$VLLM_PYTHON" -c "import vllm" 2>/dev/null; then
        run_step "vllm tests" vllm.log "$(left 60 300)" "$VLLM_PYTHON" -m pytest -m "vllm and gpu" -q -s \
            -p no:cacheprovider tests/test_vllm_gpu.py
    fi
    run_step sweep sweep.log "$(left 60)" "$PYTHON" benchmarks/prefill.py "${SWEEP[@]}" \
        --json "$OUT/sweep.json" --plot "$OUT/sweep.png" "${EXTRA[@]}"
    if [[ -f "$OUT/sweep.json" && ! -f "$OUT/sweep.png" ]]; then   # cut short: redraw what it wrote
        run_step redraw redraw.log 60 "$PYTHON" benchmarks/prefill.py --merge "$OUT/sweep.json" \
            --json "$OUT/sweep.json" --plot "$OUT/sweep.png"
    fi
fi

echo "==> [summary] $OUT/summary.md"
SUMMARY_RC=0
"$PYTHON" - "$OUT" "$MODE" "$*" <<'EOF' || SUMMARY_RC=$?
"""Write summary.md from the steps' files; exit 1 unless the tests passed and every required
length of the sweep has all its variants measured without error."""
import json, sys
from pathlib import Path

out, mode, argv = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
steps = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines() if line.strip()]
status = {name: int(rc) for name, rc, _, _ in steps}
problems = []
if status.get("environment", 1) != 0:
    problems.append("environment: " + ((out / "env.txt").read_text().strip().splitlines() or ["failed"])[-1])
if status.get("gpu tests") not in (None, 0):
    problems.append(f"gpu tests failed (exit status {status['gpu tests']}, see pytest.log)")
if status.get("vllm tests") not in (None, 0):
    problems.append(f"vLLM plugin gpu tests failed (exit status {status['vllm tests']}, see vllm.log)")

sweep_lines = []
data = json.loads((out / "sweep.json").read_text()) if (out / "sweep.json").exists() else None
if "sweep" in status and data is None:
    problems.append(f"sweep wrote no results (exit status {status['sweep']}, see sweep.log)")
if data is not None:
    rows, meta = data["rows"], data["meta"]
    variants = meta["variants"]
    for n in meta.get("required_tokens", []):
        here = {r["variant"]: r for r in rows if r["tokens"] == n}
        bad = [v for v in variants if v not in here or here[v]["error"] or here[v]["median_s"] is None]
        if bad:
            problems.append(f"sweep at {n} tokens: {', '.join(bad)} not measured")
    for n in meta.get("optional_tokens", []):
        here = [r for r in rows if r["tokens"] == n]
        if not here:
            sweep_lines.append(f"- {n} tokens (optional): not reached (out of time or the run died; see sweep.log)")
        elif any(r["error"] for r in here):
            sweep_lines.append(f"- {n} tokens (optional): " + "; ".join(
                f"{r['variant']}: {r['error']}" for r in here if r["error"]))
        else:
            sweep_lines.append(f"- {n} tokens (optional): measured")
    if status.get("sweep") not in (None, 0) and not any(p.startswith("sweep") for p in problems):
        sweep_lines.append(f"- the sweep process ended with status {status['sweep']} after the required lengths")

pytest_tail = []
if (out / "pytest.log").exists():
    pytest_tail = [l for l in (out / "pytest.log").read_text().splitlines() if l.strip()][-3:]

command = "benchmarks/gpu_check.sh" + (f" {argv}" if argv else "")
text = [f"# GPU check ({mode})", "", f"`{command}`", "",
        "## Machine", "", "```", (out / "env.txt").read_text().strip() if (out / "env.txt").exists() else "", "```",
        "", "## Steps", "", "| step | exit status | seconds | log |", "|---|---|---|---|"]
text += [f"| {name} | {rc} | {sec} | {log} |" for name, rc, sec, log in steps]
text += ["", "## Result", ""]
text += [f"- FAILED: {p}" for p in problems] or ["- passed: the gpu tests and every required length of the sweep"]
text += sweep_lines
if pytest_tail:
    text += ["", "## gpu tests (end of pytest.log)", "", "```", *pytest_tail, "```"]
if (out / "sweep.md").exists():
    text += ["", "## Prefill sweep (sweep.json, plot sweep.png)", "", (out / "sweep.md").read_text().strip()]
files = sorted(p.name for p in out.iterdir() if p.is_file()) + ["summary.md"]
text += ["", "## Files", "", ", ".join(sorted(set(files)))]
(out / "summary.md").write_text("\n".join(text) + "\n")
print("\n".join(text[text.index("## Result"):]))
sys.exit(1 if problems else 0)
EOF
if [[ "$ENV_RC" != 0 ]]; then
    exit 2
fi
exit "$SUMMARY_RC"
