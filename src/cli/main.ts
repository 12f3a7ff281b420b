#!/usr/bin/env bun
/** The `nemotron` command line: one file per command under src/cli/. */
import { parseArgs, checkFlags, UsageError } from './args';
import { DEVICE_FLAGS, openDeviceFromFlags } from './device-flags';
import { printInfo } from './info';
import { runDemo } from './demo';
import { FORWARD_FLAGS, runForward } from './forward';
import { CHAT_FLAGS, GENERATE_BOOLEAN_FLAGS, GENERATE_FLAGS, runChat, runGenerate } from './generate';
import { runPlot } from './plot';
import { runTrain, TRAIN_BOOLEAN_FLAGS, TRAIN_FLAGS } from './train';

const USAGE = `usage: nemotron <command> [flags]

commands:
  info      the WebGPU adapter, backend, feature level, key limits
  demo      the main job: text from the tiny Nemotron-H shipped in models/tiny-nemotron (trained on the project's
            docs by bun run make-tiny), streamed, with prompt and generation tokens/s
  generate  --model DIR|REPO_ID (--prompt TEXT | --input FILE) [--chat] [--max-new-tokens N]
            [--greedy | --temperature T --top-p P --top-k K --min-p M] [--repetition-penalty R] [--seed S]
            [--ignore-eos] [--dtype f32|bf16] [--json]: streams the generated text (tokens/s on stderr);
            FILE is {"input_ids": [[...]], "attention_mask"?: [[...]]} (ragged rows are left-padded);
            --json prints {"ids": [[...]], "prompt_tokens_per_s": …, "decode_tokens_per_s": …}
  chat      --model DIR|REPO_ID [sampling flags]: a conversation over stdin through the chat template
  forward   --model DIR --input FILE --out FILE [--dtype f32|bf16]: logits (and loss) of the inputs in
            FILE ({"input_ids": [[...]], "labels"?, "attention_mask"?, "cu_seqlens"?}) as safetensors
  train     --model DIR|REPO_ID --data FILE --out DIR [--steps N] [--batch-size B] [--seq-len L] [--lr X]
            [--min-lr X] [--warmup N] [--weight-decay X] [--grad-clip X] [--grad-accum N] [--eval-every N]
            [--eval-data FILE] [--save-every N] [--resume] [--seed S] [--dtype f32|bf16]: full fine-tuning
            on FILE (.txt: one document; .jsonl: {"text": …} per line) with AdamW, warmup + cosine LR,
            clipping and the MTP loss when the model has MTP; one JSON object per step on stdout
            ({"step","loss","lr","grad_norm","tokens_per_s"}); checkpoints in DIR/checkpoint-<step>/
            (--dtype: the weights' dtype, default f32; bf16 trains through f32 master copies);
            --resume continues from the newest one exactly.
            LoRA: --lora-r R trains only rank-R adapters (base frozen); [--lora-alpha A] (default 2·R)
            [--lora-dropout P] (default 0) [--lora-targets in_proj,out_proj,q_proj,k_proj,v_proj,o_proj,
            up_proj,down_proj] (the default; the MoE's stacked experts are skipped); checkpoints then
            hold the PEFT adapter (adapter_config.json + adapter_model.safetensors) and --resume
            needs the same --lora-* flags; --merge also writes base+adapters to DIR/merged/
            Progress: a bar on stderr when it is a terminal (plain lines otherwise); DIR/log.jsonl keeps
            every update, DIR/report.html and DIR/loss.svg are redrawn at each evaluation and checkpoint
  plot      DIR: redraws DIR/report.html and DIR/loss.svg from DIR/log.jsonl (a train --out folder)

device flags (every command): --device webgpu|cpu|auto  --backend vulkan|metal|d3d12|opengl|opengles  --adapter NAME`;

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
      checkFlags(args, [...DEVICE_FLAGS, ...GENERATE_FLAGS]);
      await runGenerate(args, () => openDeviceFromFlags(args));
      return 0;
    }
    case 'chat': {
      const args = parseArgs(rest, GENERATE_BOOLEAN_FLAGS);
      checkFlags(args, [...DEVICE_FLAGS, ...CHAT_FLAGS]);
      await runChat(args, () => openDeviceFromFlags(args));
      return 0;
    }
    case 'forward': {
      const args = parseArgs(rest);
      checkFlags(args, [...DEVICE_FLAGS, ...FORWARD_FLAGS]);
      await runForward(args, () => openDeviceFromFlags(args));
      return 0;
    }
    case 'train': {
      const args = parseArgs(rest, TRAIN_BOOLEAN_FLAGS);
      checkFlags(args, [...DEVICE_FLAGS, ...TRAIN_FLAGS]);
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
  } else {
    console.error(`nemotron: ${e instanceof Error ? e.message : String(e)}`);
    process.exitCode = 1;
  }
}
