#!/usr/bin/env bash
# llama.cpp on the benchmark configs, for ratios measured in the same run as ours (bench:generate).
# Gets llama.cpp's source from the npm registry (node-llama-cpp ships a git bundle of the release it
# wraps), builds llama-bench with -march=native, writes random-weight GGUFs of bench-small and
# bench-moe (make-bench-gguf.py; needs python3 with numpy), and prints one JSON line per row:
#   {"bench":"prefill"|"decode","engine":"llama.cpp","model":…,"dtype":…,"depth":…,"tokens_per_s":…,"peak_rss_bytes":…}
# prefill: a 512-token prompt; decode: 64 tokens after DEPTH cached positions (128, 2048).
# Usage: scripts/llama-cpp/bench.sh [WORK_DIR]   (default .cache/llama-cpp; THREADS default 2;
#   BUILD_ONLY=1 stops after building llama-bench and writing the GGUFs, for scripts/llama-cpp/compare.ts)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="${1:-$root/.cache/llama-cpp}"
threads="${THREADS:-2}"
version="${NODE_LLAMA_CPP_VERSION:-3.22.1}"
mkdir -p "$work"

if [ ! -x "$work/src/build/bin/llama-bench" ]; then
  if [ ! -d "$work/src/.git" ]; then
    (cd "$work" && npm pack --silent "node-llama-cpp@$version" >/dev/null &&
      tar xzf "node-llama-cpp-$version.tgz" package/llama/gitRelease.bundle &&
      git clone -q package/llama/gitRelease.bundle src && rm -rf package "node-llama-cpp-$version.tgz")
  fi
  cmake -S "$work/src" -B "$work/src/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF >/dev/null
  cmake --build "$work/src/build" --target llama-bench -j "$(nproc)" >/dev/null
fi

for model in small moe; do
  for dtype in f32 bf16; do
    gguf="$work/bench-$model-$dtype.gguf"
    [ -f "$gguf" ] || PYTHONPATH="$work/src/gguf-py" python3 "$here/make-bench-gguf.py" "$root/bench/$model.config.json" "$gguf" "$dtype"
    [ "${BUILD_ONLY:-0}" = 1 ] && continue
    for run in "-p 512 -n 0" "-p 0 -n 64 -d 128" "-p 0 -n 64 -d 2048"; do
      # shellcheck disable=SC2086
      /usr/bin/time -f '%M' -o "$work/rss" "$work/src/build/bin/llama-bench" -m "$gguf" -t "$threads" -r 3 $run -o jsonl >"$work/rows" 2>/dev/null
      python3 - "$model" "$dtype" "$threads" "$work/rss" "$work/rows" <<'PY'
import json, sys
model, dtype, threads, rss_file, rows_file = sys.argv[1:]
rss = int(open(rss_file).read().split()[-1]) * 1024  # GNU time's %M is KiB
for line in open(rows_file):
    r = json.loads(line)
    prefill = r["n_prompt"] > 0
    print(json.dumps({"bench": "prefill" if prefill else "decode", "engine": "llama.cpp", "build": r["build_commit"], "cpu": r["cpu_info"],
                      "model": "bench-" + model, "dtype": dtype, "depth": r["n_prompt"] if prefill else r["n_depth"], "threads": int(threads),
                      "tokens_per_s": round(r["avg_ts"], 2), "stddev": round(r["stddev_ts"], 2), "peak_rss_bytes": rss}))
PY
    done
  done
done
