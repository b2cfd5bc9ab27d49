#!/usr/bin/env bash
# AISHELL-2 (1000 h Mandarin, iOS channel; 2018A-EVAL dev/test on iOS, Android and Mic) with a pretrained speech encoder and a pretrained LLM,
# on GPUs. Needs no edits but paths: the corpus folder, and local directories (or
# hub ids your machine can reach) for the encoder and the LLM in conf/train.yaml.
#
# Usage: bash run.sh --corpus /data/AISHELL-2 [--ngpu 8] [--stage N] [--stop-stage N]
#   --corpus   folder holding iOS/{data,dev,test} (and AISHELL-2-Eval-Test when present)
#   --ngpu     GPUs per node for torchrun DDP (multi-node: set XLLM_NNODES, XLLM_RDZV)
#   --config   training recipe (default conf/train.yaml: Whisper-medium + Qwen2.5-1.5B)
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
decode_sets="dev test dev_ios test_ios dev_android test_android dev_mic test_mic"
. utils/parse_options.sh
. ./path.sh
. ./cmd.sh
. utils/stage.sh

if want 0; then
  banner 0 "prepare AISHELL-2 into data/{train,dev,test}[_ios,_android,_mic]"
  [[ -n "$corpus" ]] || { echo "run.sh: --corpus /path/to/AISHELL-2 is required for stage 0" >&2; exit 1; }
  $train_cmd "$exp/log/prep.log" xllm prep aishell2 "$corpus" data
fi

. utils/asr_stages.sh
