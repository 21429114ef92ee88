#!/usr/bin/env bash
# One device call for the persistent expert kernel: build the module for sm_90a, check the
# kernel against the sequence (bench/expert_step.py prints every output's agreement and
# both step times), run its kernel tests and the attention regression tests, and save the
# SASS instruction mix. Everything lands in $OUT (log.txt, *.json).
#   bash bench/device/megakernel_session.sh [stage ...]
#   stages: build diag tests ncu full frontends ab switches splitk baseline fold fold_ab
#           fold_pdl step vs_sequence stepgap variants variant_full clusters boundaries grouped
#           tma splitk_finish
#   (variants: for a call of a few minutes. The default build and each of VARIANTS (space
#   between builds, comma between one build's flags) built side by side in copies of the
#   tree, then every build's step (kernel only, with its agreement to the sequence)
#   interleaved config by config, into one variants.json; then the last variant's kernel
#   tests on the small configurations (VARIANT_TESTS, a pytest -k expression);
#   variant_full: on the same warm machine after `variants`, the whole pipeline (replays,
#   full-size precision) with the last variant's build against the default build's, then
#   that build's whole kernel and attention tests)
#   (ab: AB_FLAGS=-DNAME=0 ... ab, a build-switch A/B against this call's default build;
#   switches: SWITCHES="-DA=1 -DB=1" each that way; splitk: SPLITK=2, the engine knob;
#   grouped: FLASH_RT_MK_GROUPED_DEPS=1 / 0 alternated (GROUPED_FULL=1: + the pipeline);
#   docs/performance.md runs 7-10;
#   baseline: an earlier commit's whole tree, `git archive REF | gzip > carry/base.tar.gz`
#   here, built in /tmp/base on the device and its step measured in the same call)
#   MK_MODEL=pi0: the step of Pi0's expert (bench/expert_step.py --model pi0);
#   fold: the folded action I/O build (FLASH_RT_MK_FOLD_IO=1, the default since run 16), its tests, and the whole
#   pipeline with the fold on and off on that build (VIEWS, HORIZONS, PRECISION_CONFIGS))
# Wheels the device lacks travel in carry/ (pybind11).
# shellcheck source=bench/device/session_common.sh
source "$(dirname "$0")/session_common.sh"
STAGES=${*:-build diag tests}
use_carried_wheels
gpu_info

# bench/expert_step.py for MK_MODEL's expert (Pi0.5 by default) under a time limit:
# step_bench SECONDS [expert_step args...]
step_bench() {
  local limit=$1; shift
  timeout "$limit" python3 bench/expert_step.py ${MK_MODEL:+--model $MK_MODEL} "$@"
}
kernel_tests() {
  timeout 120 python3 -m pytest -q -x test/kernels/test_expert_megakernel.py -p no:cacheprovider 2>&1 | tail -3
}

do_build() {
  stage build
  build_kernels || exit 1
  so=$(ls flash_rt/flash_rt_kernels*.so)
  cuobjdump -sass "$so" > "$OUT/sass.txt" 2>/dev/null
  echo "SASS: QGMMA $(grep -c QGMMA "$OUT/sass.txt"), HGMMA $(grep -c HGMMA "$OUT/sass.txt"), UBLKCP $(grep -c UBLKCP "$OUT/sass.txt")"
  gzip -f "$OUT/sass.txt"
}
do_diag() {
  stage "diag depth 1"
  step_bench 150 --configs small:2:50 full:2:50 --depth 1 --iters 50 --out "$OUT/diag_depth1.json"
  if ! python3 -c "import json,sys; r=json.load(open('$OUT/diag_depth1.json'))['results']; sys.exit(0 if all('error' not in x and x['precision']['q']['cosine'] > 0.99 for x in r) else 1)"; then
    stage "diag depth 1, descriptors swapped"
    FLASH_RT_MK_DESC_SWAP=1 step_bench 120 --configs small:2:50 --depth 1 --iters 20
  fi
  stage "full depth"
  step_bench 240 --configs ${FULL_CONFIGS:-full:2:50 full:1:10 full:3:10} --iters ${STEP_ITERS:-200} \
      --out "$OUT/expert_step.json"
  # kept on the (warm) machine for a later call's `full` ($OUT starts empty each call)
  mkdir -p build && cp "$OUT/expert_step.json" build/last_expert_step.json 2>/dev/null
}
do_ab() {
  # the persistent kernel built with AB_FLAGS (a build switch of csrc/megakernel, e.g.
  # -DFLASH_RT_MK_WEIGHT_EVICT_FIRST=0), its step and its tests, against the default
  # build's numbers of this same call (run `build diag` first); then the default again
  local flags=${AB_FLAGS:?set AB_FLAGS, e.g. -DFLASH_RT_MK_WEIGHT_EVICT_FIRST=0}
  stage "A/B: build with $flags"
  build_kernels "$flags" || exit 1
  step_bench 200 --configs ${FULL_CONFIGS:-full:2:50 full:1:10} --iters ${STEP_ITERS:-200} \
      --kernel-only --out "$OUT/expert_step_ab_$(echo "$flags" | tr -c 'A-Za-z0-9' '_').json"
  [ "${AB_TESTS:-1}" = 1 ] && kernel_tests  # (AB_TESTS=0: the bench's agreement only)
  [ "${AB_KEEP_BUILD:-0}" = 1 ] && return  # (the next A/B rebuilds anyway)
  stage "A/B: default build again"
  build_kernels || exit 1
}
do_splitk() {
  # K per O / down task (an engine knob, no rebuild) against this call's default build
  local scale=${SPLITK:-2}
  stage "FLASH_RT_MK_SPLITK_SCALE=$scale"
  export FLASH_RT_MK_SPLITK_SCALE=$scale
  step_bench 200 --configs ${FULL_CONFIGS:-full:2:50 full:1:10} --iters ${STEP_ITERS:-200} \
      --out "$OUT/expert_step_splitk$scale.json"
  kernel_tests
  unset FLASH_RT_MK_SPLITK_SCALE
}
do_grouped() {
  # the schedule's finer dependencies (FLASH_RT_MK_GROUPED_DEPS=1, an engine knob: no
  # rebuild) against this call's default build, alternated twice config by config; then
  # their kernel tests, and (GROUPED_FULL=1) the whole pipeline with it on and off
  local round cfg on
  for round in 1 2; do
    for cfg in ${FULL_CONFIGS:-full:2:50 full:1:10}; do
      for on in 0 1; do
        stage "grouped deps $on, $cfg, round $round"
        FLASH_RT_MK_GROUPED_DEPS=$on step_bench 120 --configs "$cfg" --iters ${STEP_ITERS:-100} \
            --kernel-only --out "$OUT/expert_step_grouped${on}_${cfg//:/_}_r$round.json" \
            | grep -E "megakernel .* us|ERROR|^    (o|down):" | cut -c1-240
      done
    done
  done
  python3 - "$OUT" <<'PY'
import glob, json, os, sys
for path in sorted(glob.glob(os.path.join(sys.argv[1], "expert_step_grouped*.json"))):
    for r in json.load(open(path))["results"]:
        p50 = r.get("megakernel_us", {}).get("p50")
        print(os.path.basename(path), r["config"], r.get("grouped_deps"), p50,
              all(r.get("within_drift", {}).values()) if "within_drift" in r else r.get("error"))
PY
  stage "grouped deps: kernel tests"
  timeout 200 python3 -m pytest -q -x test/kernels/test_expert_megakernel.py -k grouped \
      -p no:cacheprovider 2>&1 | tail -3
  if [ "${GROUPED_FULL:-0}" = 1 ]; then
    full_checkpoint
    pipeline_replay grouped_on FLASH_RT_MK_GROUPED_DEPS=1
    pipeline_replay grouped_off FLASH_RT_MK_GROUPED_DEPS=0
    pipeline_precision grouped FLASH_RT_MK_GROUPED_DEPS=1
  fi
}
do_switches() {
  # build switches (SWITCHES="-DNAME=1 ..."), one at a time as the `ab` stage: their step,
  # their kernel tests, the default build again; run `build diag` first. A comma joins
  # switches into one build (-DA=1,-DB=1).
  local all=(${SWITCHES:?set SWITCHES, e.g. -DFLASH_RT_MK_WGMMA_ATTENTION=0}) i
  for i in "${!all[@]}"; do
    AB_KEEP_BUILD=$(( i + 1 < ${#all[@]} )) AB_FLAGS=${all[$i]//,/ } do_ab
  done
}
do_baseline() {
  # the step of an earlier tree (its own kernels and schedule), built beside this one, for
  # an A/B of source changes that are not build switches
  local tar=${BASE_TAR:-carry/base.tar.gz}
  [ -f "$tar" ] || { echo "baseline: no $tar"; return; }
  stage "baseline: build $tar in /tmp/base"
  rm -rf /tmp/base && mkdir -p /tmp/base && tar -xzf "$tar" -C /tmp/base
  (cd /tmp/base && OUT=$OUT build_kernels) || return
  stage "baseline: step"
  (cd /tmp/base && PYTHONPATH="/tmp/site:/tmp/base" step_bench 240 \
      --configs ${FULL_CONFIGS:-full:2:50 full:1:10 full:3:10} --iters ${STEP_ITERS:-200} \
      --out "$OUT/expert_step_baseline.json")
}
do_variants() {
  local variants=(${VARIANTS:?set VARIANTS, e.g. "-DA=1 -DB=1 -DA=1,-DB=1"}) i
  local jobs=$(( 16 / (${#variants[@]} + 1) )); (( jobs < 2 )) && jobs=2
  local dirs=("$PWD") labels=(default) pids=()
  stage "variants: ${#variants[@]} + the default build side by side, $jobs jobs each"
  rm -rf /tmp/variant[0-9]*  # (an earlier call's builds: variant_full takes the last of these)
  for i in "${!variants[@]}"; do
    dirs+=("/tmp/variant$i"); labels+=("${variants[$i]//-DFLASH_RT_MK_/}")
    mkdir -p "/tmp/variant$i"
    tar -cf - --exclude=./build --exclude=./carry --exclude=./.git --exclude=./.venv --exclude=./.whl . \
        | tar -xf - -C "/tmp/variant$i"
    echo "${variants[$i]//,/ }" > "/tmp/variant$i/.variant_flags"  # (for variant_full)
  done
  for i in "${!dirs[@]}"; do
    local flags=""; (( i > 0 )) && flags=${variants[$((i - 1))]//,/ }
    (cd "${dirs[$i]}" && BUILD_JOBS=$jobs BUILD_LOG="/tmp/cmake_$i.log" build_kernels "$flags" \
        > "/tmp/build_$i.log" 2>&1; echo "build ${labels[$i]}: exit $?" >> "/tmp/build_$i.log") &
    pids+=($!)
  done
  wait "${pids[@]}"  # (a bare `wait` also waits for the log's tee, which never ends)
  for i in "${!dirs[@]}"; do cat "/tmp/build_$i.log"; done
  rm -f /tmp/variant_step_*.json "$OUT/variants.json"
  for cfg in ${FULL_CONFIGS:-full:2:50 full:1:10}; do
    for i in "${!dirs[@]}"; do
      stage "variants: ${labels[$i]} $cfg"
      (cd "${dirs[$i]}" && PYTHONPATH="/tmp/site:${dirs[$i]}" step_bench 60 --configs "$cfg" \
          --iters ${STEP_ITERS:-100} --kernel-only --out "/tmp/variant_step_${i}_${cfg//:/_}.json" \
          > "/tmp/variant_bench.log" 2>&1) || tail -5 /tmp/variant_bench.log
      python3 - "${labels[$i]}" "/tmp/variant_step_${i}_${cfg//:/_}.json" "$OUT/variants.json" <<'PY'
import json, os, sys
label, path, out = sys.argv[1:]
merged = json.load(open(out)) if os.path.exists(out) else {
    "what": "megakernel build variants, interleaved (bench/device/megakernel_session.sh variants)",
    "runs": []}
if not os.path.exists(path):
    print(label, "no result"); sys.exit(0)
d = json.load(open(path))
for r in d["results"]:
    merged["runs"].append({"build": label, **{k: d[k] for k in ("device", "date", "torch", "cuda")},
                           "result": r})
    if "megakernel_us" not in r:
        print(label, r.get("config"), r.get("error")); continue
    drift = {k: 1 - r["precision"][k]["cosine"] for k in ("xn", "q")}
    floor = {k: 1 - r["sequence_flash_vs_gemm"][k]["cosine"] for k in ("xn", "q")}
    ok = all(r["within_drift"][k] for k in drift)  # (bench/expert_step.py: the tests' bound)
    print(f"{label} {r['config']}: p50 {r['megakernel_us']['p50']:.1f} us, p99 "
          f"{r['megakernel_us']['p99']:.1f}, drift xn {drift['xn']:.2e} q {drift['q']:.2e} "
          f"(floor {floor['xn']:.2e} / {floor['q']:.2e}) agrees: {ok}")
    # each phase's span (us) and its inputs / epilogue parts, to see where a switch acts
    ph = r.get("megakernel_phases", {})
    print("  spans:", " ".join(f"{k} {v['span_us']:.2f} ({v['inputs_us']:.2f}/{v['epilogue_us']:.2f})"
                               for k, v in ph.items() if isinstance(v, dict) and "span_us" in v))
json.dump(merged, open(out, "w"), indent=1)
PY
    done
  done
  local last=${dirs[-1]}
  stage "variants: kernel tests of ${labels[-1]}"
  (cd "$last" && PYTHONPATH="/tmp/site:$last" timeout 90 python3 -m pytest -q -x \
      test/kernels/test_expert_megakernel.py -k "${VARIANT_TESTS:-small or depth1 or depth2}" \
      -p no:cacheprovider 2>&1 | tail -4)
}
do_variant_full() {
  # the last variant `variants` built on this machine (/tmp/variantN), in the whole
  # pipeline: its replays and full-size precision, and the default build's replays beside
  # them (both with the megakernel expert)
  local dir
  dir=$(ls -d /tmp/variant[0-9]* 2>/dev/null | sort -V | tail -1)  # (variants clears older ones)
  if [ -z "$dir" ] || ! ls "$dir"/flash_rt/flash_rt_kernels*.so >/dev/null 2>&1; then
    echo "variant_full: no variant build on this machine (run the variants stage first)"
    return
  fi
  stage "variant_full: $(cat "$dir/.variant_flags") from $dir"
  full_checkpoint
  pipeline_replay default_build FLASH_RT_EXPERT=megakernel
  (cd "$dir" && PYTHONPATH="/tmp/site:$dir" pipeline_replay variant FLASH_RT_EXPERT=megakernel &&
   PYTHONPATH="/tmp/site:$dir" pipeline_precision variant FLASH_RT_EXPERT=megakernel)
  # the whole kernel and attention test files on that build (VARIANT_FULL_TESTS=0: skip):
  # the same flags made the default are the same binary, so these stand for that default
  if [ "${VARIANT_FULL_TESTS:-1}" = 1 ]; then
    stage "variant_full: kernel and attention tests of $(cat "$dir/.variant_flags")"
    (cd "$dir" && PYTHONPATH="/tmp/site:$dir" timeout 200 python3 -m pytest -q -x \
        test/kernels/test_expert_megakernel.py test/kernels/test_attention.py \
        -p no:cacheprovider 2>&1 | tail -8)
  fi
}
do_tests() {
  stage tests
  timeout 240 python3 -m pytest -q -x test/kernels/test_expert_megakernel.py test/kernels/test_attention.py \
      -p no:cacheprovider 2>&1 | tail -25
}
do_full() {
  # the whole pipeline, A/B on one machine: replay with the kernel sequence vs the megakernel
  # this call's diag, else the last one on this machine (build/ survives between calls)
  local step_json="$OUT/expert_step.json"
  [ -f "$step_json" ] || step_json=build/last_expert_step.json
  if python3 - "$step_json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
# the kernel tests' drift bound on the final adaRMS output (bench/expert_step.py records it)
ok = all("error" not in x and x["within_drift"]["xn"] for x in r)
print("megakernel agrees with the sequence:", ok)
sys.exit(0 if ok else 1)
PY
  then
    full_checkpoint
    for e in ${EXPERTS:-megakernel sequence}; do pipeline_replay "$e" FLASH_RT_EXPERT="$e"; done
    pipeline_precision megakernel FLASH_RT_EXPERT=megakernel
  fi
}
do_fold() {
  # the folded action I/O (build switch FLASH_RT_MK_FOLD_IO=1): its frontend tests, then the
  # pipeline with the fold on and off on that one build (FLASH_RT_MK_FOLD_IO=1 / 0 at run
  # time), its precision, and the default build again
  stage "build with FLASH_RT_MK_FOLD_IO=1"
  build_kernels -DFLASH_RT_MK_FOLD_IO=1 || exit 1
  stage "the fold build's step alone (its folded paths off: the testbed runs the launches)"
  step_bench 200 --configs ${FULL_CONFIGS:-full:2:50 full:1:10} --iters ${STEP_ITERS:-200} \
      --kernel-only --out "$OUT/expert_step_fold_build.json"
  stage "kernel and frontend tests with the fold"
  kernel_tests
  timeout 200 python3 -m pytest -q -rs test/gpu/test_pi05_frontends.py test/gpu/test_pi0_frontends.py \
      -p no:cacheprovider 2>&1 | tail -6
  full_checkpoint
  pipeline_replay fold_on FLASH_RT_MK_FOLD_IO=1
  pipeline_replay fold_off FLASH_RT_MK_FOLD_IO=0
  pipeline_precision fold FLASH_RT_MK_FOLD_IO=1
  stage "default build again"
  build_kernels || exit 1
}
do_fold_ab() {
  # the fold's pipeline A/B alone, for a call of < 10 minutes: the FLASH_RT_MK_FOLD_IO=1
  # build, the pipeline with the fold on and off on it, its precision (no tests, and the
  # build is left in place: run `build` to get the default back)
  stage "build with FLASH_RT_MK_FOLD_IO=1"
  build_kernels -DFLASH_RT_MK_FOLD_IO=1 || exit 1
  full_checkpoint
  pipeline_replay fold_on FLASH_RT_MK_FOLD_IO=1
  pipeline_replay fold_off FLASH_RT_MK_FOLD_IO=0
  pipeline_precision fold FLASH_RT_MK_FOLD_IO=1
}
do_step() {
  # the step alone of whatever build is in place (kernel only, FULL_CONFIGS), labelled
  # STEP_LABEL: for an A/B across builds on one warm machine without their tests
  stage "step alone, ${STEP_LABEL:=current}"
  step_bench 200 --configs ${FULL_CONFIGS:-full:2:50 full:1:10} --iters ${STEP_ITERS:-100} \
      --kernel-only --out "$OUT/expert_step_$STEP_LABEL.json" | grep -E "megakernel .* us|ERROR"
}
do_fold_pdl() {
  # the FLASH_RT_MK_FOLD_IO=1 build (run 16's one-round-trip action projections) and
  # programmatic dependent launch between the steps (FLASH_RT_MK_PDL, a launch attribute):
  # their kernel and frontend tests, then the pipeline with fold + PDL, fold alone and
  # neither on that build, and the precision of fold + PDL
  stage "build with FLASH_RT_MK_FOLD_IO=1"
  build_kernels -DFLASH_RT_MK_FOLD_IO=1 || exit 1
  stage "tests: PDL launches, graph replays, the fold"
  timeout 150 python3 -m pytest -q -x test/kernels/test_expert_megakernel.py -p no:cacheprovider \
      -k "programmatic or replays or small_h50 or full_h50_2views" 2>&1 | tail -3
  FLASH_RT_MK_PDL=1 timeout 150 python3 -m pytest -q -rs -k "fold or Fold" test/gpu/test_pi05_frontends.py \
      test/gpu/test_pi0_frontends.py -p no:cacheprovider 2>&1 | tail -3
  full_checkpoint
  pipeline_replay fold_pdl FLASH_RT_MK_FOLD_IO=1 FLASH_RT_MK_PDL=1
  pipeline_replay fold FLASH_RT_MK_FOLD_IO=1 FLASH_RT_MK_PDL=0
  pipeline_replay neither FLASH_RT_MK_FOLD_IO=0 FLASH_RT_MK_PDL=0
  pipeline_precision fold_pdl FLASH_RT_MK_FOLD_IO=1 FLASH_RT_MK_PDL=1
}
do_vs_sequence() {
  # the kernel against the sequence at the chunk, beside the chunk-level floor (the
  # sequence with its flash decoder attention against its GEMM one): test/gpu/
  # full_precision.py with FLASH_RT_PRECISION_VS_SEQUENCE=1 (PRECISION_CONFIGS)
  full_checkpoint
  pipeline_precision vs_sequence FLASH_RT_EXPERT=megakernel FLASH_RT_PRECISION_VS_SEQUENCE=1
}
do_clusters() {
  # resident thread-block clusters per size at the kernel's footprint, and where a full
  # launch's blocks land (bench/device/cluster_probe.cu) -> $OUT/clusters.json
  stage clusters
  nvcc -O2 -std=c++17 -arch=sm_90a -o /tmp/cluster_probe bench/device/cluster_probe.cu \
    && timeout 60 /tmp/cluster_probe > "$OUT/clusters.json"
  python3 -c "import json; d = json.load(open('$OUT/clusters.json')); print(d['device'], d['sms'], 'SMs:', ', '.join(f\"{c['size']} x {c['max_resident']} = {c['blocks']}\" for c in d['clusters']))"
}
do_boundaries() {
  # what one phase boundary costs by protocol: the kernel's counter, flags in the data, no
  # synchronisation, a flag word per producer block (bench/device/boundary_probe.cu)
  # -> $OUT/boundaries.json
  stage boundaries
  nvcc -O3 -std=c++17 -arch=sm_90a -o /tmp/boundary_probe bench/device/boundary_probe.cu \
    && timeout 120 /tmp/boundary_probe > "$OUT/boundaries.json"
  python3 -c "import json; d = json.load(open('$OUT/boundaries.json')); print(d['device'], *(f\"{r['protocol']} {r['data_bytes_read_per_block']} B: {r['us_per_phase']:.3f} us/phase{dict([(True, ''), (False, ' WRONG'), (None, ' (unchecked)')])[r['correct']]}\" for r in d['runs']), sep='\\n')"
}
do_splitk_finish() {
  # a norm phase against the split-K sum finished by the tile's last K-split task (the norm
  # applied in the consumer's epilogue): what "norms dissolved" would save, before building
  # it (bench/device/splitk_finish_probe.cu) -> $OUT/splitk_finish.json
  stage splitk_finish
  nvcc -O3 -std=c++17 -arch=sm_90a -o /tmp/splitk_finish_probe bench/device/splitk_finish_probe.cu \
    && timeout 120 /tmp/splitk_finish_probe > "$OUT/splitk_finish.json"
  python3 -c "import json; d = json.load(open('$OUT/splitk_finish.json')); print(d['device'], *(f\"{r['protocol']} S={r['splits']}: {r['us_per_iteration']:.3f} us/iteration{'' if r['correct'] else ' WRONG'}\" for r in d['runs']), sep='\\n')"
}
do_stepgap() {
  # Is the kernel itself slower inside the pipeline's graph than in bench/expert_step.py's
  # (the step in the pipeline is 50-75 us longer, docs/performance.md run 12), or is the
  # gap around it? ncu's duration of the same kernel in both, caches and clocks left alone.
  # (Run 13, H100: 660 us median in the pipeline, 650-661 in the testbed: the gap is
  # around the kernel.)
  full_checkpoint
  local ncu_args=(--cache-control none --clock-control none --metrics gpu__time_duration.sum
                  -k regex:expert_megakernel --launch-skip 40 --launch-count 20 --csv)
  stage "step gap: the kernel in the pipeline (2 views h50)"
  timeout 280 ncu "${ncu_args[@]}" python3 bench/policy.py --models pi05 --ckpt "$CK" \
      --views 2 --horizon 50 --iters 20 --baselines '' > "$OUT/stepgap_pipeline.csv" 2>&1
  stage "step gap: the kernel in the testbed (full:2:50)"
  # (60 replays: the testbed launches ~12 warm-up kernels, so 40 skipped leave 20+)
  timeout 200 ncu "${ncu_args[@]}" python3 bench/expert_step.py --configs full:2:50 \
      --iters 60 --kernel-only > "$OUT/stepgap_testbed.csv" 2>&1
  for f in pipeline testbed; do
    python3 - "$OUT/stepgap_$f.csv" "$f" <<'PY'
import csv, statistics, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 5 and r[-3] == "gpu__time_duration.sum"]
scale = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}
us = [float(r[-1].replace(",", "")) * scale[r[-2]] for r in rows]
print(sys.argv[2], "kernel duration p50 us:", round(statistics.median(us), 1) if us else None, "n", len(us))
PY
  done
}
do_frontends() {
  stage "frontend tests (tiny / small presets, every GPU frontend)"
  timeout 300 python3 -m pytest -q -x test/gpu/test_pi05_frontends.py -p no:cacheprovider 2>&1 | tail -15
}
do_ncu() {
  # where the warps stall, per SASS instruction (sampled): the raw metrics and the source
  # page (SASS with line info) come back as text next to the report itself
  stage ncu
  local rep="$OUT/megakernel"
  timeout 300 ncu --section SpeedOfLight --section WarpStateStats --section SourceCounters \
      --section InstructionStats --section SchedulerStats --section MemoryWorkloadAnalysis \
      -k regex:expert_megakernel --launch-skip 1 --launch-count 1 -f -o "$rep" \
      python3 bench/expert_step.py ${MK_MODEL:+--model $MK_MODEL} --configs ${NCU_CONFIG:-full:2:50} --iters 3 > "$OUT/ncu_run.log" 2>&1
  tail -3 "$OUT/ncu_run.log"
  ncu --import "$rep.ncu-rep" --page details > "$OUT/ncu_details.txt" 2>&1
  grep -E "Duration|Throughput|Registers|Warp Cycles|Issued|Stall|No Instruction|Active Warps" "$OUT/ncu_details.txt" | head -40
  ncu --import "$rep.ncu-rep" --page raw --csv > "$OUT/ncu_raw.csv" 2>&1
  python3 - "$OUT/ncu_raw.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
if len(rows) >= 3:
    names, vals = rows[0], rows[2]
    st = sorted(((float(v.replace(",", "")), n) for n, v in zip(names, vals)
                 if "pcsamp_warps_issue_stalled" in n and v.replace(",", "").replace(".", "").isdigit()),
                reverse=True)
    tot = sum(v for v, _ in st) or 1.0
    for v, n in st[:14]:
        print(f"{100 * v / tot:5.1f} %  {n}")
PY
  ncu --import "$rep.ncu-rep" --page source --csv --print-source sass > "$OUT/ncu_source.csv" 2>&1 \
    || ncu --import "$rep.ncu-rep" --page source --csv > "$OUT/ncu_source.csv" 2>&1
  head -c 600 "$OUT/ncu_source.csv"; echo
  gzip -f "$OUT/ncu_source.csv" "$OUT/ncu_raw.csv"
}
do_tma() {
  # the attention tile's inputs by TMA (docs/performance.md, prepared after run 18): the
  # default build beside Q_TMA, KV_TMA and both (kernel only, 2 views h50 and 1 view h10,
  # and the both-build's whole kernel test file); then, if the both-build's step at 2 views
  # h50 is more than 5 us faster, its whole pipeline (replays beside the default build's,
  # full-size precision at 2 views h50) on the same machine
  # (TMA_VARIANTS: fewer builds for a short call; the both-build last, its name below)
  VARIANTS=${TMA_VARIANTS:-"-DFLASH_RT_MK_ATTN_Q_TMA=1 -DFLASH_RT_MK_ATTN_KV_TMA=1 -DFLASH_RT_MK_ATTN_Q_TMA=1,-DFLASH_RT_MK_ATTN_KV_TMA=1"} \
    FULL_CONFIGS=${FULL_CONFIGS:-full:2:50 full:1:10} VARIANT_TESTS="megakernel or programmatic" \
    do_variants
  if python3 - "$OUT/variants.json" <<'PY'
import json, sys
runs = json.load(open(sys.argv[1]))["runs"]
p50 = {r["build"]: r["result"]["megakernel_us"]["p50"] for r in runs
       if r["result"].get("config") == "full:2:50" and "megakernel_us" in r["result"]}
print("2 views h50 p50 (us):", p50)
sys.exit(0 if p50.get("ATTN_Q_TMA=1,ATTN_KV_TMA=1", 1e9) < p50.get("default", 0) - 5 else 1)
PY
  then
    VIEWS=${VIEWS:-2} HORIZONS=${HORIZONS:-50} ITERS=${ITERS:-60} PRECISION_CONFIGS=${PRECISION_CONFIGS:-2x50} \
      VARIANT_FULL_TESTS=0 do_variant_full
  fi
}
for st in $STAGES; do "do_$st"; done
stage done
