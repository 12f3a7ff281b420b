/**
 * Nemotron-H in a web page: the model folder is fetched over HTTP (config.json,
 * generation_config.json, model.safetensors, tokenizer files), the weights go onto the page's
 * WebGPU (`navigator.gpu`) through the same kernels, model and tokenizer as the CLI, and the
 * generated text streams into the page. Bundled by scripts/build-browser.ts; Node/Bun-only pieces
 * (Dawn, files, bun:ffi) are stubbed out there and never called here.
 *
 * URL parameters: model (folder URL, default ./model/), prompt, or input (a URL of
 * {"input_ids": [[...]]}), max_new_tokens, greedy=1, ignore_eos=1, autorun=1.
 * When done, `window.nemotronResult` holds {ids, prompt_tokens_per_s, decode_tokens_per_s} (the
 * same JSON as `nemotron generate --json`).
 */
import { GenerationConfig, NemotronHConfig, NemotronHForCausalLM, loadCheckpoint } from '@nemotron-ts/core';
import { ChatTemplates, HfTokenizer, SafetensorsReader, memorySource, type JsonObject } from '@nemotron-ts/hub';
import { WebGpuDevice, isFloat } from '@nemotron-ts/kernels';

interface PageResult {
  ids: number[][];
  prompt_tokens_per_s: number;
  decode_tokens_per_s: number;
  device: string;
}

declare global {
  interface Window {
    nemotronResult?: PageResult;
    nemotronError?: string;
  }
}

const params = new URLSearchParams(location.search);
const output = document.getElementById('output')!;
const status = document.getElementById('status')!;

async function fetchJson(url: string): Promise<JsonObject> {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return (await r.json()) as JsonObject;
}

/** The page's adapter in words (browsers leave `description` empty): e.g. "google swiftshader (WebGPU in the browser)". */
let adapterName = 'WebGPU';

async function openPageDevice(): Promise<WebGpuDevice> {
  if (!('gpu' in navigator)) throw new Error('this browser has no WebGPU (navigator.gpu is missing)');
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) throw new Error('WebGPU: no adapter');
  const limits: Record<string, number> = {};
  for (const key of [
    'maxStorageBufferBindingSize',
    'maxBufferSize',
    'maxComputeWorkgroupStorageSize',
    'maxComputeInvocationsPerWorkgroup',
    'maxComputeWorkgroupSizeX',
    'maxStorageBuffersPerShaderStage',
  ] as const)
    limits[key] = adapter.limits[key];
  const features = [...adapter.features].filter((f) => f === 'subgroups' || f === 'shader-f16' || f === 'timestamp-query') as GPUFeatureName[];
  const device = await adapter.requestDevice({ requiredLimits: limits, requiredFeatures: features });
  adapterName = `${[adapter.info.vendor, adapter.info.architecture, adapter.info.description].filter(Boolean).join(' ') || 'unknown adapter'} (WebGPU in the browser)`;
  return new WebGpuDevice({ gpu: navigator.gpu, adapter, device, backend: 'vulkan', featureLevel: 'core', skipped: [] });
}

async function loadModel(base: string, device: WebGpuDevice): Promise<{ model: NemotronHForCausalLM; tokenizer: HfTokenizer }> {
  const config = NemotronHConfig.fromJSON(await fetchJson(`${base}config.json`), { source: `${base}config.json` });
  const model = new NemotronHForCausalLM(config, { dtype: 'f32', device });
  const generation = await fetch(`${base}generation_config.json`);
  if (generation.ok) model.generationConfig = GenerationConfig.fromJSON((await generation.json()) as JsonObject, `${base}generation_config.json`);
  const weights = await fetch(`${base}model.safetensors`);
  if (!weights.ok) throw new Error(`${base}model.safetensors: HTTP ${weights.status}`);
  const reader = await SafetensorsReader.open(memorySource(new Uint8Array(await weights.arrayBuffer()), `${base}model.safetensors`));
  const shapes = new Map(reader.names().map((name) => [name, reader.entry(name).shape]));
  await loadCheckpoint(model, shapes, (key, target) => reader.load(key, { device: target.device, dtype: isFloat(target.dtype) ? target.dtype : undefined }), {
    strict: true,
    tieWordEmbeddings: config.tieWordEmbeddings,
  });
  const tokenizerConfig = await fetchJson(`${base}tokenizer_config.json`);
  const tokenizer = new HfTokenizer(
    await fetchJson(`${base}tokenizer.json`),
    tokenizerConfig,
    ChatTemplates.fromConfigValue(tokenizerConfig.chat_template, `${base}tokenizer_config.json`),
    base,
  );
  return { model: model.eval().requiresGrad_(false), tokenizer };
}

async function run(): Promise<void> {
  const base = new URL(params.get('model') ?? './model/', location.href).href.replace(/\/?$/, '/');
  status.textContent = 'opening WebGPU…';
  const device = await openPageDevice();
  status.textContent = `loading ${base} on ${adapterName}…`;
  const { model, tokenizer } = await loadModel(base, device);
  const input = params.get('input');
  const prompt = params.get('prompt') ?? 'The trainer ';
  const file = input ? await fetchJson(new URL(input, location.href).href) : null;
  const inputIds = file ? (file.input_ids as number[][]) : [tokenizer.encode(prompt)];
  const attentionMask = (file?.attention_mask as number[][] | undefined) ?? undefined;
  const greedy = params.get('greedy') === '1';
  status.textContent = `compiling the kernels on ${adapterName}…`;
  // A couple of tokens first compile the shaders, so the speeds reported below are the steady ones.
  await model.generate({ inputIds, attentionMask, maxNewTokens: 2, doSample: false });
  status.textContent = `generating on ${adapterName}…`;
  output.textContent = tokenizer.decode(inputIds[0]!, { skipSpecialTokens: true });
  const result = await model.generate({
    inputIds,
    attentionMask,
    tokenizer,
    maxNewTokens: Number(params.get('max_new_tokens') ?? 96),
    ...(greedy ? { doSample: false } : { seed: 1 }),
    ...(params.get('ignore_eos') === '1' ? { eosTokenId: null } : {}),
    onToken: (e) => {
      output.textContent += e.text![0]!;
    },
  });
  const s = result.stats;
  const round = (v: number) => Number(v.toFixed(2));
  // As `nemotron generate --json`: each row's tokens up to the one that finished it.
  window.nemotronResult = {
    ids: result.tokens.map((row, b) => row.slice(0, result.lengths[b])),
    prompt_tokens_per_s: round(s.promptTokensPerS),
    decode_tokens_per_s: round(s.decodeTokensPerS),
    device: adapterName,
  };
  status.textContent = `done on ${adapterName}: prompt ${s.promptTokens} tokens at ${s.promptTokensPerS.toFixed(0)} tokens/s, ${s.steps} new tokens at ${s.decodeTokensPerS.toFixed(0)} tokens/s`;
}

run().catch((e: unknown) => {
  window.nemotronError = e instanceof Error ? `${e.message}\n${e.stack ?? ''}` : String(e);
  status.textContent = `error: ${window.nemotronError}`;
  console.error(window.nemotronError);
});
