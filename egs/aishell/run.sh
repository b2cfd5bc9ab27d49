#!/usr/bin/env bash
# AISHELL-1 (178 h Mandarin) with a pretrained speech encoder and a pretrained LLM,
# on GPUs. Needs no edits but paths: the corpus folder, and local directories (or
# hub ids your machine can reach) for the encoder and the LLM in conf/train.yaml.
#
# Usage: bash run.sh --corpus /data/aishell [--ngpu 8] [--stage N] [--stop-stage N]
#   --corpus   folder holding data_aishell/ (tarballs as distributed, or extracted)
#   --ngpu     GPUs per node for torchrun DDP (multi-node: set XLLM_NNODES, XLLM_RDZV)
#   --config   training recipe (default conf/train.yaml: Whisper-small + Qwen2.5-1.5B)
# Stages: 0 prep  1 validate  2 stage 1 (C-Former on AISHELL, speed perturbed)
#         3 stage 2 (align with the LLM)  4 stage 3 (instruction mix)  5 average
#         6 decode dev/test + score  7 results table
# Slurm: cmd_backend=slurm bash run.sh ... (partition/gpus/mem in conf/slurm.conf)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

stage=0
stop_stage=7
corpus=
ngpu=1
nj=4
exp=exp/whisper_qwen
config=conf/train.yaml
avg_num=5
beam=4
decode_sets="dev test"
. utils/parse_options.sh
. ./path.sh
. ./cmd.sh
. utils/stage.sh

if want 0; then
  banner 0 "prepare AISHELL-1 into data/{train,dev,test}"
  [[ -n "$corpus" ]] || { echo "run.sh: --corpus /path/to/aishell is required for stage 0" >&2; exit 1; }
  $train_cmd "$exp/log/prep.log" xllm prep aishell "$corpus" data
fi

if want 1; then
  banner 1 "validate"
  for s in train dev test; do xllm data validate "data/$s"; xllm data info "data/$s"; done
fi

# Speed perturbation (0.9/1.0/1.1) and SpecAugment run on the fly in the data
# pipeline (features.speed_perturb / features.spec_augment in the config).
for n in 1 2 3; do
  if want $((n + 1)); then
    banner $((n + 1)) "training stage $n on $ngpu GPU(s)"
    $train_cmd --gpus "$ngpu" "$exp/log/train_stage$n.log" \
      xllm train --stage "$n" --config "$config" --exp "$exp" --ngpu "$ngpu" --device cuda
  fi
done

if want 5; then
  banner 5 "average the $avg_num best checkpoints of stage 3"
  xllm average --exp "$exp" --stage 3 --num "$avg_num"
fi

if want 6; then
  banner 6 "decode and score: $decode_sets"
  for s in $decode_sets; do
    $decode_cmd --gpus 1 "$exp/log/decode_$s.log" \
      xllm decode --exp "$exp" --data "data/$s" --stage 3 --beam "$beam" --wer --device cuda --nj "$nj"
    $decode_cmd --gpus 1 "$exp/log/decode_${s}_nar.log" \
      xllm decode --exp "$exp" --data "data/$s" --stage 1 --mode nar --wer --device cuda
  done
fi

if want 7; then
  banner 7 "results"
  mkdir -p "$exp"
  xllm results "$exp" | tee "$exp/RESULTS.md"
fi
