/**
 * `nemotron forward` and `nemotron generate` over workers (see parallel-flags.ts). The forward
 * writes the same `--out` file as one device (`logits` f32 [B, T, V], `loss` f32 [1] with labels);
 * generate is greedy and prints `{"ids": [[new ids per row]]}` with `--json`, else each row's text.
 */
import { join } from 'node:path';
import { NemotronHConfig, resolveGeneration, type Rows } from '@nemotron-ts/core';
import { loadTokenizer, readConfigJson, resolveCheckpoint, saveSafetensors } from '@nemotron-ts/hub';
import { getCpuDevice, tensor, type Device, type Tensor } from '@nemotron-ts/kernels';
import { ParallelModel, type ParallelOptions } from '../parallel';
import { numberFlag, requireFlag, stringFlag, UsageError, type ParsedArgs } from './args';
import { readForwardInputs } from './forward-inputs';

async function configOf(folder: string): Promise<NemotronHConfig> {
  const configPath = join(folder, 'config.json');
  return NemotronHConfig.fromJSON(await readConfigJson(configPath), { source: configPath });
}

function dtypeOf(args: ParsedArgs): 'f32' | 'bf16' | 'auto' {
  const dtype = stringFlag(args, 'dtype', 'auto');
  if (dtype !== 'f32' && dtype !== 'bf16' && dtype !== 'auto') throw new UsageError(`--dtype must be f32 or bf16, got '${dtype}'`);
  return dtype;
}

export async function runParallelForward(args: ParsedArgs, parallel: ParallelOptions, openDevice: () => Promise<Device>): Promise<void> {
  const folder = await resolveCheckpoint(requireFlag(args, 'model'));
  const inputPath = requireFlag(args, 'input');
  const outPath = requireFlag(args, 'out');
  const dtype = dtypeOf(args);
  const inputs = await readForwardInputs(inputPath, (await configOf(folder)).vocabSize);
  const model = await ParallelModel.fromPretrained(folder, { ...parallel, device: await openDevice(), dtype, localFilesOnly: true });
  const host: Record<string, Tensor> = {};
  try {
    const { logits, loss } = await model.forward(inputs);
    const values = logits.toFloat32();
    const bad = values.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0 || (loss !== null && !Number.isFinite(loss))) {
      throw new Error(
        `forward: the ${bad >= 0 ? `logits hold a NaN or infinite value (flat index ${bad})` : `loss is ${loss}`}; nothing written to ${outPath}`,
      );
    }
    host.logits = tensor(values, logits.shape, { device: getCpuDevice() });
    if (loss !== null) host.loss = tensor(Float32Array.of(loss), [1], { device: getCpuDevice() });
    await saveSafetensors(outPath, host);
  } finally {
    for (const t of Object.values(host)) t.dispose();
    await model.close();
  }
}

export async function runParallelGenerate(args: ParsedArgs, parallel: ParallelOptions, openDevice: () => Promise<Device>): Promise<void> {
  const unsupported = ['temperature', 'top-p', 'top-k', 'min-p', 'repetition-penalty', 'seed', 'chat'].find((f) => args.flags.has(f));
  if (unsupported) throw new UsageError(`--${unsupported} is not supported with parallel generation (greedy only)`);
  const folder = await resolveCheckpoint(requireFlag(args, 'model'));
  const config = await configOf(folder);
  const maxNewTokens = numberFlag(args, 'max-new-tokens', 16)!;
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) throw new UsageError(`--max-new-tokens must be an integer ≥ 1, got ${maxNewTokens}`);
  const prompt = stringFlag(args, 'prompt');
  const inputPath = stringFlag(args, 'input');
  if ((prompt === undefined) === (inputPath === undefined)) throw new UsageError('give exactly one of --prompt and --input');
  const tokenizer = prompt !== undefined || !args.flags.has('json') ? await loadTokenizer(folder) : null;
  let inputIds: Rows;
  let attentionMask: Rows | undefined;
  if (prompt !== undefined) inputIds = [tokenizer!.encode(prompt)];
  else {
    const inputs = await readForwardInputs(inputPath!, config.vocabSize);
    inputIds = inputs.inputIds;
    attentionMask = inputs.attentionMask;
  }
  const model = await ParallelModel.fromPretrained(folder, { ...parallel, device: await openDevice(), dtype: dtypeOf(args), localFilesOnly: true });
  try {
    // The one-device defaults: generation_config.json's EOS and pad ids (greedy whatever it says).
    const g = resolveGeneration(
      { maxNewTokens, doSample: false, eosTokenId: args.flags.has('ignore-eos') ? null : undefined },
      model.model.generationConfig,
      config,
      inputIds[0]!.length,
    );
    const { tokens } = await model.generate({ inputIds, attentionMask, maxNewTokens, eosTokenIds: g.eosTokenIds, padTokenId: g.padTokenId });
    if (args.flags.has('json')) console.log(JSON.stringify({ ids: tokens }));
    else for (const row of tokens) console.log(tokenizer!.decode(row));
  } finally {
    await model.close();
  }
}
