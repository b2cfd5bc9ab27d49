#!/usr/bin/env bash
# VSDial-CN-style multimodal ASR: speech + an image as context. The speech interface
# comes from a speech experiment (e.g. egs/aishell's, stages 1-2); this recipe prepares
# the image+speech manifests, trains stage 3 (joint, image-grounded ASR) and decodes
# with and without the images, so the gain from the image is measured directly.
#
# Usage: bash run.sh --manifests /data/vsdial --init-exp ../aishell/exp/whisper_qwen [--ngpu 8]
#   --manifests  folder with train/dev/test manifests: train.json|jsonl|tsv (records with
#                audio, image, text, optional prompt/speaker/id; paths relative to it)
#   --init-exp   an experiment whose stage0..2 are reused (linked) as this one's
# Stages: 0 prep manifests  1 validate  2 link the speech experiment  3 stage 3
#         4 decode with images  5 decode without images  6 results table
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

stage=0
stop_stage=6
manifests=
init_exp=
ngpu=1
exp=exp/vsdial
config=conf/train.yaml
beam=4
prompt="根据图片请忠实地识别该语音"
. utils/parse_options.sh
. ./path.sh
. ./cmd.sh
. utils/stage.sh

if want 0; then
  banner 0 "prepare manifests from $manifests"
  [[ -n "$manifests" ]] || { echo "run.sh: --manifests DIR is required for stage 0" >&2; exit 1; }
  for s in train dev test; do
    m=$(ls "$manifests/$s".{json,jsonl,tsv} 2>/dev/null | head -n 1 || true)
    [[ -n "$m" ]] || { echo "run.sh: no $s.json/.jsonl/.tsv in $manifests" >&2; exit 1; }
    xllm prep manifest "$m" "data/$s" --prompt "$prompt"
  done
fi

if want 1; then
  banner 1 "validate"
  for s in train dev test; do xllm data validate "data/$s"; xllm data info "data/$s"; done
fi

if want 2; then
  banner 2 "reuse the speech interface of $init_exp"
  [[ -n "$init_exp" ]] || { echo "run.sh: --init-exp EXP (with stage1/stage2) is required for stage 2" >&2; exit 1; }
  mkdir -p "$exp"
  for n in 0 1 2; do
    if [[ -d "$init_exp/stage$n" && ! -e "$exp/stage$n" ]]; then
      ln -s "$(cd "$init_exp/stage$n" && pwd)" "$exp/stage$n"
    fi
  done
  [[ -f "$init_exp/cmvn.json" && ! -e "$exp/cmvn.json" ]] && cp "$init_exp/cmvn.json" "$exp/" || true
fi

if want 3; then
  banner 3 "stage 3: image-grounded ASR"
  $train_cmd --gpus "$ngpu" "$exp/log/train_stage3.log" \
    xllm train --stage 3 --config "$config" --exp "$exp" --ngpu "$ngpu" --device cuda
fi

if want 4; then
  banner 4 "decode with images"
  for s in dev test; do
    $decode_cmd --gpus 1 "$exp/log/decode_$s.log" \
      xllm decode --exp "$exp" --data "data/$s" --stage 3 --beam "$beam" --wer --device cuda
  done
fi

if want 5; then
  banner 5 "decode without images (same model)"
  for s in dev test; do
    $decode_cmd --gpus 1 "$exp/log/decode_${s}_noimage.log" \
      xllm decode --exp "$exp" --data "data/$s" --stage 3 --beam "$beam" --wer --device cuda --no-image
  done
fi

if want 6; then
  banner 6 "results"
  mkdir -p "$exp"
  xllm results "$exp" | tee "$exp/RESULTS.md"
fi
