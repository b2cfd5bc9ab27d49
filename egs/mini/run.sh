#!/usr/bin/env bash
# xllm mini recipe: the embedded, synthesized Mandarin corpus end to end on CPU.
# Prepares the corpus, trains the tiny preset in X-LLM's stages (0: LM on text,
# 1: C-Former/Q-Former with their encoders, 2: speech interface against the LLM,
# 3: joint speech+image+video), decodes and scores, and prints a results table.
#
# Usage: bash run.sh [--stage N] [--stop-stage N] [--fast true] [--nj N] [--exp DIR]
#   --fast true   every stage briefly (smoke test, ~5 min; also XLLM_FAST=1)
#   --stage/--stop-stage  run a slice of the stages below; finished work is skipped
# Stages: 0 prep  1 validate  2 train LM  3 train C-Former/Q-Former  4 align speech
#         5 joint multimodal  6 decode+score  7 results table
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

stage=0
stop_stage=7
fast="${XLLM_FAST:-false}"
nj=2
exp=exp/tiny
config=conf/tiny.yaml
data=data
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
fi

if want 7; then
  banner 7 "results"
  mkdir -p "$exp"
  xllm results "$exp" | tee "$exp/RESULTS.md"
fi
