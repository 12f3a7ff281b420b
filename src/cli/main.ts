#!/usr/bin/env bun
/** The `nemotron` command line: one file per command under src/cli/. */
import { parseArgs, checkFlags, UsageError } from './args';
import { DEVICE_FLAGS, openDeviceFromFlags } from './device-flags';
import { printInfo } from './info';
import { runDemo } from './demo';
import { FORWARD_FLAGS, runForward } from './forward';

const USAGE = `usage: nemotron <command> [flags]

commands:
  info      the WebGPU adapter, backend, feature level, key limits
  demo      the main job: the dense_f32 fixture through fromPretrained and forward (loss vs expected, prefill speed)
  forward   --model DIR --input FILE --out FILE [--dtype f32|bf16]: logits (and loss) of the inputs in
            FILE ({"input_ids": [[...]], "labels"?, "attention_mask"?, "cu_seqlens"?}) as safetensors

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
    case 'forward': {
      const args = parseArgs(rest);
      checkFlags(args, [...DEVICE_FLAGS, ...FORWARD_FLAGS]);
      await runForward(args, () => openDeviceFromFlags(args));
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
