/**
 * `nemotron generate` and `nemotron chat`.
 *
 * generate --model DIR|REPO_ID (--prompt TEXT | --input FILE) [--chat] [--max-new-tokens N]
 *          [--greedy | --temperature T --top-p P --top-k K --min-p M] [--repetition-penalty R]
 *          [--seed S] [--ignore-eos] [--dtype f32|bf16] [--lora DIR|REPO_ID] [--no-strict] [--json]
 *   Streams the decoded text to stdout as it is generated (one row; a batch prints each row's text
 *   at the end), then the prompt and generation speed to stderr. `--chat` wraps the prompt in the
 *   tokenizer's chat template. `--input FILE` is JSON `{"input_ids": [[...]], "attention_mask"?:
 *   [[...]]}`; rows of different lengths are left-padded with the pad id. `--json` prints one
 *   object instead: `{"ids": [[new ids per row]], "prompt_tokens_per_s", "decode_tokens_per_s"}`.
 *   `--lora` applies a PEFT LoRA adapter (folder or Hub id) unmerged, in both commands; `--no-strict`
 *   loads a checkpoint with missing or unexpected tensors (warnings; see fromPretrained's `strict`).
 *
 * chat --model DIR|REPO_ID [sampling flags]
 *   A conversation over stdin: each line is a user turn; the whole history goes through the chat
 *   template and the reply streams back. An empty line or end of input quits.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  NemotronHConfig,
  checkAttentionMask,
  checkPaddingLayout,
  checkTokenIds,
  type GenerateOptions,
  type GenerateResult,
  type Rows,
} from '@nemotron-ts/core';
import { loadTokenizer, parseHfJson, readConfigJson, resolveCheckpoint, type ChatMessage, type HfTokenizer } from '@nemotron-ts/hub';
import { OutOfMemoryError, type Device } from '@nemotron-ts/kernels';
import { NemotronHForCausalLM } from '../pretrained';
import { integerFlag, MAX_SEED, numberFlag, RefusedError, requireFlag, stringFlag, UsageError, type ParsedArgs } from './args';
import { applyLoraAdapterFlag, LORA_ADAPTER_FLAG } from './lora-flags';

const SAMPLING_FLAGS = [
  'max-new-tokens',
  'greedy',
  'temperature',
  'top-p',
  'top-k',
  'min-p',
  'repetition-penalty',
  'seed',
  'ignore-eos',
  'dtype',
  LORA_ADAPTER_FLAG,
  'no-strict',
] as const;
export const GENERATE_FLAGS = ['model', 'prompt', 'input', 'chat', 'json', ...SAMPLING_FLAGS] as const;
export const GENERATE_BOOLEAN_FLAGS = ['chat', 'json', 'greedy', 'ignore-eos', 'no-strict'] as const;
export const CHAT_FLAGS = ['model', ...SAMPLING_FLAGS] as const;

/** The decoding options the flags ask for (unset ones come from the generation config). */
function decodingOptions(args: ParsedArgs): Partial<GenerateOptions> {
  const options: Partial<GenerateOptions> = {};
  const integer = (name: string, min: number, max?: number): number | undefined => integerFlag(args, name, min, undefined, max);
  const maxNew = integer('max-new-tokens', 1);
  if (maxNew !== undefined) options.maxNewTokens = maxNew;
  const seed = integer('seed', 0, MAX_SEED);
  if (seed !== undefined) options.seed = seed;
  const sampling = {
    temperature: numberFlag(args, 'temperature'),
    topP: numberFlag(args, 'top-p'),
    topK: integer('top-k', 0),
    minP: numberFlag(args, 'min-p'),
  };
  const sets = Object.entries(sampling).filter(([, v]) => v !== undefined);
  if (args.flags.has('greedy')) {
    if (sets.length > 0)
      throw new UsageError(`--greedy cannot be combined with --${sets.map(([k]) => k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)).join(', --')}`);
    options.doSample = false;
  } else if (sets.length > 0) {
    options.doSample = true;
    Object.assign(options, Object.fromEntries(sets));
  }
  if (sampling.temperature !== undefined && !(sampling.temperature > 0)) throw new UsageError(`--temperature must be > 0, got ${sampling.temperature}`);
  if (sampling.topP !== undefined && !(sampling.topP > 0 && sampling.topP <= 1)) throw new UsageError(`--top-p must be in (0, 1], got ${sampling.topP}`);
  if (sampling.minP !== undefined && !(sampling.minP >= 0 && sampling.minP <= 1)) throw new UsageError(`--min-p must be in [0, 1], got ${sampling.minP}`);
  const penalty = numberFlag(args, 'repetition-penalty');
  if (penalty !== undefined) {
    if (!(penalty > 0)) throw new UsageError(`--repetition-penalty must be > 0, got ${penalty}`);
    options.repetitionPenalty = penalty;
  }
  if (args.flags.has('ignore-eos')) options.eosTokenId = null;
  return options;
}

function dtypeFlag(args: ParsedArgs): 'f32' | 'bf16' | 'auto' {
  const dtype = stringFlag(args, 'dtype', 'auto');
  if (dtype !== 'f32' && dtype !== 'bf16' && dtype !== 'auto') throw new UsageError(`--dtype must be f32 or bf16, got '${dtype}'`);
  return dtype;
}

/** The tokenizer of the checkpoint folder, or null when it has none. */
async function tokenizerOf(folder: string): Promise<HfTokenizer | null> {
  const present = await stat(join(folder, 'tokenizer.json')).then(
    (s) => s.isFile(),
    () => false,
  );
  return present ? loadTokenizer(folder) : null;
}

/** Prompt rows from `--input FILE`: rectangular with an optional mask, or ragged rows left-padded. */
async function readPromptFile(path: string, vocabSize: number, padId: number): Promise<{ ids: Rows; mask: Rows | null }> {
  const info = await stat(path).catch(() => null);
  if (!info?.isFile()) throw new Error(`${path}: no such file`);
  const json = parseHfJson(await Bun.file(path).text(), path);
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error(`${path}: expected a JSON object with "input_ids"`);
  const field = (name: string) => `${path}: ${name}`;
  let rows = json.input_ids as unknown;
  if (rows === undefined) throw new Error(`${field('input_ids')}: missing`);
  if (Array.isArray(rows) && rows.length > 0 && rows.every((v) => typeof v === 'number')) rows = [rows];
  const maskValue = json.attention_mask ?? null;
  if (maskValue === null && Array.isArray(rows) && rows.every(Array.isArray)) {
    const lengths = (rows as unknown[][]).map((r) => r.length);
    const width = Math.max(...lengths);
    if (lengths.some((n) => n !== width)) {
      if (lengths.some((n) => n === 0)) throw new Error(`${field('input_ids')}: a row is empty`);
      // Ragged rows: left-pad with the pad id and mask the padding.
      const ids = checkTokenIds(
        (rows as number[][]).map((r) => [...new Array<number>(width - r.length).fill(padId), ...r]),
        field('input_ids'),
        vocabSize,
      );
      const mask = lengths.map((n) => [...new Array<number>(width - n).fill(0), ...new Array<number>(n).fill(1)]);
      return { ids, mask };
    }
  }
  const ids = checkTokenIds(rows, field('input_ids'), vocabSize);
  if (maskValue === null) return { ids, mask: null };
  const mask = checkAttentionMask(Array.isArray(maskValue) && maskValue.every((v) => typeof v === 'number') ? [maskValue] : maskValue, field('attention_mask'));
  if (mask.length !== ids.length || mask[0]!.length !== ids[0]!.length) {
    throw new Error(`${field('attention_mask')}: shape [${mask.length}, ${mask[0]!.length}] does not match input_ids [${ids.length}, ${ids[0]!.length}]`);
  }
  checkPaddingLayout(mask, field('attention_mask'), 'left');
  return { ids, mask };
}

/** The tokens a row generated, up to and including the one that finished it. */
function generatedIds(result: GenerateResult): number[][] {
  return result.tokens.map((row, b) => row.slice(0, result.lengths[b]));
}

function speed(result: GenerateResult): string {
  const s = result.stats;
  return `prompt: ${s.batch}×${s.promptTokens} tokens, ${s.promptTokensPerS.toFixed(1)} tokens/s · generation: ${s.steps} tokens per row, ${s.decodeTokensPerS.toFixed(1)} tokens/s`;
}

export async function runGenerate(args: ParsedArgs, openDevice: () => Promise<Device>): Promise<void> {
  const modelPath = requireFlag(args, 'model');
  const prompt = stringFlag(args, 'prompt');
  const inputPath = stringFlag(args, 'input');
  if ((prompt === undefined) === (inputPath === undefined)) throw new UsageError('give exactly one of --prompt TEXT and --input FILE');
  if (inputPath !== undefined && args.flags.has('chat')) throw new UsageError('--chat applies to --prompt text, not to --input ids');
  const json = args.flags.has('json');
  const options = decodingOptions(args);
  const dtype = dtypeFlag(args);

  // Inputs are checked against the config and tokenizer before the weights are loaded.
  const folder = await resolveCheckpoint(modelPath);
  const configPath = join(folder, 'config.json');
  const config = NemotronHConfig.fromJSON(await readConfigJson(configPath), { source: configPath });
  const tokenizer = await tokenizerOf(folder);
  let ids: Rows;
  let mask: Rows | null = null;
  if (prompt !== undefined) {
    if (!tokenizer) throw new Error(`${folder} has no tokenizer.json: give token ids with --input FILE`);
    ids = [args.flags.has('chat') ? tokenizer.encodeChat([{ role: 'user', content: prompt }], { addGenerationPrompt: true }) : tokenizer.encode(prompt)];
    checkTokenIds(ids, 'the encoded prompt', config.vocabSize);
  } else {
    ({ ids, mask } = await readPromptFile(inputPath!, config.vocabSize, config.padTokenId ?? 0));
  }

  const device = await openDevice();
  const model = await loadModel(args, folder, device, dtype);
  try {
    const stream = !json && ids.length === 1 && tokenizer !== null;
    const result = await model
      .generate({
        ...options,
        inputIds: ids,
        attentionMask: mask ?? undefined,
        tokenizer: tokenizer ?? undefined,
        onToken: stream ? (e) => process.stdout.write(e.text![0]!) : undefined,
      })
      .catch((e: unknown) => {
        // The cache is sized by --max-new-tokens (or the generation config's max_new_tokens).
        if (e instanceof OutOfMemoryError)
          throw new RefusedError(
            `${options.maxNewTokens !== undefined ? `--max-new-tokens ${options.maxNewTokens}` : `max_new_tokens of ${folder}'s generation config`}: ${e.message}`,
          );
        throw e;
      });
    if (json) {
      const s = result.stats;
      console.log(
        JSON.stringify({ ids: generatedIds(result), prompt_tokens_per_s: round(s.promptTokensPerS), decode_tokens_per_s: round(s.decodeTokensPerS) }),
      );
      return;
    }
    if (stream) process.stdout.write('\n');
    else result.tokens.forEach((_, b) => console.log(`[${b}] ${result.text ? result.text[b] : generatedIds(result)[b]!.join(' ')}`));
    console.error(speed(result));
  } finally {
    model.dispose();
  }
}

/** The checkpoint with the `--lora` adapter (unmerged) when given, every weight frozen: the decode kernels keep packed copies of frozen weights. */
async function loadModel(args: ParsedArgs, folder: string, device: Device, dtype: 'f32' | 'bf16' | 'auto'): Promise<NemotronHForCausalLM> {
  const model = await NemotronHForCausalLM.fromPretrained(folder, { device, dtype, strict: !args.flags.has('no-strict') });
  try {
    await applyLoraAdapterFlag(args, model);
  } catch (e) {
    model.dispose();
    throw e;
  }
  return model.requiresGrad_(false);
}

function round(v: number): number {
  return Number(v.toFixed(2));
}

export async function runChat(args: ParsedArgs, openDevice: () => Promise<Device>): Promise<void> {
  const modelPath = requireFlag(args, 'model');
  const options = decodingOptions(args);
  const dtype = dtypeFlag(args);
  const folder = await resolveCheckpoint(modelPath);
  const tokenizer = await tokenizerOf(folder);
  if (!tokenizer) throw new Error(`${folder} has no tokenizer.json: chat needs one`);
  if (!tokenizer.chatTemplates) throw new Error(`${folder} has no chat template (tokenizer_config.json chat_template or chat_template.jinja)`);
  const device = await openDevice();
  const model = await loadModel(args, folder, device, dtype);
  const history: ChatMessage[] = [];
  const interactive = process.stdin.isTTY === true;
  try {
    if (interactive) process.stdout.write('> ');
    for await (const line of console) {
      const text = line.trim();
      if (text === '') break;
      history.push({ role: 'user', content: text });
      const ids = tokenizer.encodeChat(history, { addGenerationPrompt: true });
      const result = await model.generate({ ...options, inputIds: [ids], tokenizer, onToken: (e) => process.stdout.write(e.text![0]!) });
      history.push({ role: 'assistant', content: result.text![0]! });
      process.stdout.write('\n');
      console.error(speed(result));
      if (interactive) process.stdout.write('> ');
    }
  } finally {
    model.dispose();
  }
}
