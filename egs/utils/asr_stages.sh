#!/usr/bin/env bash
# Stages 1-7 shared by the GPU ASR recipes (egs/aishell, egs/aishell2): validate,
# training stages 1-3 (torchrun DDP through --ngpu), averaging, decoding + scoring,
# results. Sourced by run.sh after its corpus-specific stage 0, with these set:
# stage, stop_stage, ngpu, nj, exp, config, avg_num, beam, decode_sets,
# train_cmd, decode_cmd (cmd.sh) and want/banner (utils/stage.sh).

if want 1; then
  banner 1 "validate"
  for s in train dev test; do xllm data validate "data/$s"; xllm data info "data/$s"; done
fi

# Speed perturbation (0.9/1.0/1.1) and SpecAugment run on the fly in the data
# pipeline (stageN.batch.speed_perturb / stageN.batch.spec_augment, or data.batch.*, in the config).
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
    [[ -d "data/$s" ]] || { echo "skip data/$s (not prepared)" >&2; continue; }
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
