#!/usr/bin/env bun
/** The `nemotron` command line: one file per command under src/cli/. */
import { parseArgs, checkFlags, RefusedError, UsageError } from './args';
import { DEVICE_FLAGS, openDeviceFromFlags } from './device-flags';
import { printInfo } from './info';
import { runDemo } from './demo';
import { FORWARD_BOOLEAN_FLAGS, FORWARD_FLAGS, runForward } from './forward';
import { CHAT_FLAGS, GENERATE_BOOLEAN_FLAGS, GENERATE_FLAGS, runChat, runGenerate } from './generate';
import { runPlot } from './plot';
import { runTrain, TRAIN_BOOLEAN_FLAGS, TRAIN_FLAGS } from './train';
import { PARALLEL_FLAGS, readParallelFlags } from './parallel-flags';
import { runParallelForward, runParallelGenerate } from './parallel';

const USAGE = `usage: nemotron <command> [flags]

commands:
  info      the WebGPU adapter, backend, feature level, key limits
  demo      the main job: text from the tiny Nemotron-H shipped in models/tiny-nemotron (trained on the project's
            docs by bun run make-tiny), streamed, with prompt and generation tokens/s
  generate  --model DIR|REPO_ID (--prompt TEXT | --input FILE) [--chat] [--max-new-tokens N]
            [--greedy | --temperature T --top-p P --top-k K --min-p M] [--repetition-penalty R] [--seed S]
            [--ignore-eos] [--dtype f32|bf16] [--lora DIR|REPO_ID] [--no-strict] [--json]: streams the
            generated text (tokens/s on stderr);
            FILE is {"input_ids": [[...]], "attention_mask"?: [[...]]} (left padding only; ragged rows are left-padded);
            --json prints {"ids": [[...]], "prompt_tokens_per_s": …, "decode_tokens_per_s": …}
  chat      --model DIR|REPO_ID [sampling flags] [--lora DIR|REPO_ID]: a conversation over stdin through
            the chat template
  forward   --model DIR --input FILE --out FILE [--dtype f32|bf16] [--lora DIR|REPO_ID] [--grads]
            [--no-strict]: logits (and loss) of the inputs in FILE ({"input_ids": [[...]], "labels"?,
            "attention_mask"?, "cu_seqlens"?, "mtp"?: {"input_ids", "labels" (pre-shifted)}}) as
            safetensors; --grads also writes grad/<checkpoint name> (f32) of the loss for every
            checkpoint tensor, and mtp/loss + mtp/grad/<name> of the MTP total loss when FILE has
            an "mtp" block (weights f32 unless --dtype)
  train     --model DIR|REPO_ID --data FILE --out DIR [--steps N] [--batch-size B] [--seq-len L] [--lr X]
            [--min-lr X] [--warmup N] [--weight-decay X] [--grad-clip X] [--grad-accum N] [--eval-every N]
            [--eval-data FILE] [--save-every N] [--save-total-limit N] [--resume] [--seed S] [--dtype f32|bf16] [--pack]
            [--gradient-checkpointing] [--no-strict]: full fine-tuning on FILE (.txt: one document; .jsonl:
            {"text": …} per line, or chat {"messages": [...]} per line, rendered with the chat template
            and the loss on assistant tokens only) with AdamW, warmup + cosine LR, clipping and the MTP
            loss when the model has MTP; --pack packs whole documents into rows with cu_seqlens (no
            attention or Mamba state crosses a document); --gradient-checkpointing recomputes each
            block in backward (less memory); one JSON object per step on stdout
            ({"step","loss","lr","grad_norm","tokens_per_s","peak_bytes"}); checkpoints in DIR/checkpoint-<step>/
            (--dtype: the weights' dtype, default f32; bf16 trains through f32 master copies);
            --resume continues from the newest one exactly (same --seq-len, --batch-size, --grad-accum,
            --seed, --dtype, training rows; a changed --steps, --lr, --min-lr, --warmup, --weight-decay or --grad-clip
            applies from the resumed step on); --save-total-limit N keeps the newest N checkpoints.
            One trainer at a time per DIR (a lock file; a second one exits 2).
            LoRA: --lora-r R trains only rank-R adapters (base frozen); [--lora-alpha A] (default 2·R)
            [--lora-dropout P] (default 0) [--lora-targets in_proj,q_proj,k_proj,v_proj,o_proj,up_proj,
            down_proj] (the default, what PEFT accepts on nemotron_h: out_proj works but PEFT refuses
            it; the MoE's stacked experts are skipped, as in PEFT); checkpoints then
            hold the PEFT adapter (adapter_config.json + adapter_model.safetensors) and --resume
            needs the same --lora-* flags; --merge also writes base+adapters to DIR/merged/
            Progress: a bar on stderr when it is a terminal (plain lines otherwise); DIR/log.jsonl keeps
            every update, DIR/report.html and DIR/loss.svg are redrawn at each evaluation and checkpoint
  plot      DIR: redraws DIR/report.html and DIR/loss.svg from DIR/log.jsonl (a train --out folder)

model flags (forward, generate, chat; train takes --no-strict): --lora DIR|REPO_ID  a PEFT LoRA adapter, applied unmerged (not
  --adapter, which picks the GPU); --no-strict  missing or unexpected checkpoint tensors are warnings
  (missing ones freshly initialised), not errors
device flags (every command): --device webgpu|native|cpu|auto  --backend vulkan|metal|d3d12|opengl|opengles  --adapter NAME

parallel flags (forward, generate, train): --pipeline-stages N --expert-parallel N --data-parallel N
            (any of them; together they compose: PP × EP × DP workers, each stage sharding its experts
            over its own workers, each replica a whole pipeline)
            [--devices SPEC[,SPEC…]] (one per worker, rank = (replica·stages + stage)·ep + shard, or one for all: cpu, native[:THREADS] (or
            cpu:native[:THREADS]; without a count the native workers share the cores), webgpu, auto,
            vulkan|metal|d3d12|opengl|opengles[:0], adapter:NAME) [--microbatches M]: the work spread
            over Bun Workers, one device each; forward writes the same --out file; generate is greedy;
            train makes the one-device trainer's updates and checkpoints (optimizer state included:
            --resume continues exactly, on one device or in parallel); LoRA with --pipeline-stages or
            --data-parallel (dropout 0 there); --dtype bf16 through the workers' f32 masters (not with
            --expert-parallel); no --gradient-checkpointing

Flags take their value as --flag VALUE or --flag=VALUE; a value that starts with "--" needs the
second form, e.g. --prompt=--hello.`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === 'help' || command === '--help') {
    console.log(USAGE);
    return command ? 0 : 1;
  }
  switch (command) {
    case 'info': {
      const args = parseArgs(rest, ['json']);
      checkFlags(args, [...DEVICE_FLAGS, 'json']);
      printInfo(await openDeviceFromFlags(args), args.flags.has('json'));
      return 0;
    }
    case 'demo': {
      const args = parseArgs(rest);
      checkFlags(args, [...DEVICE_FLAGS]);
      await runDemo(await openDeviceFromFlags(args));
      return 0;
    }
    case 'generate': {
      const args = parseArgs(rest, GENERATE_BOOLEAN_FLAGS);
      checkFlags(args, [...DEVICE_FLAGS, ...GENERATE_FLAGS, ...PARALLEL_FLAGS]);
      const parallel = readParallelFlags(args);
      if (parallel) await runParallelGenerate(args, parallel, () => openDeviceFromFlags(args));
      else await runGenerate(args, () => openDeviceFromFlags(args));
      return 0;
    }
    case 'chat': {
      const args = parseArgs(rest, GENERATE_BOOLEAN_FLAGS);
      checkFlags(args, [...DEVICE_FLAGS, ...CHAT_FLAGS]);
      await runChat(args, () => openDeviceFromFlags(args));
      return 0;
    }
    case 'forward': {
      const args = parseArgs(rest, FORWARD_BOOLEAN_FLAGS);
      checkFlags(args, [...DEVICE_FLAGS, ...FORWARD_FLAGS, ...PARALLEL_FLAGS]);
      const parallel = readParallelFlags(args);
      if (parallel) await runParallelForward(args, parallel, () => openDeviceFromFlags(args));
      else await runForward(args, () => openDeviceFromFlags(args));
      return 0;
    }
    case 'train': {
      const args = parseArgs(rest, TRAIN_BOOLEAN_FLAGS);
      checkFlags(args, [...DEVICE_FLAGS, ...TRAIN_FLAGS, ...PARALLEL_FLAGS]);
      await runTrain(args, () => openDeviceFromFlags(args));
      return 0;
    }
    case 'plot': {
      const args = parseArgs(rest);
      checkFlags(args, []);
      await runPlot(args);
      return 0;
    }
    default:
      throw new UsageError(`unknown command '${command}'`);
  }
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (e) {
  if (e instanceof UsageError) {
    console.error(`nemotron: ${e.message}\n\n${USAGE}`);
    process.exitCode = 2;
  } else if (e instanceof RefusedError) {
    console.error(`nemotron: ${e.message}`);
    process.exitCode = 2;
  } else {
    console.error(`nemotron: ${e instanceof Error ? e.message : String(e)}`);
    process.exitCode = 1;
  }
}
