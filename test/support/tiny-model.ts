/**
 * A tiny Nemotron-H (every layer kind) with the demo's byte-level tokenizer, written as an ordinary
 * HF checkpoint folder (config.json, generation_config.json, model.safetensors, tokenizer.json,
 * tokenizer_config.json with a chat template) for tests, and rebuilt when missing or made by an
 * older recipe.
 *
 * Its weights are the project's deterministic random init, except that the token embeddings are
 * scaled up and lm_head encodes the byte bigrams of a short text: the residual stream is then
 * dominated by the current token, and the head turns it into "the bytes that followed it in the
 * text" — so sampling prints readable, text-like bytes rather than noise, while every layer still
 * runs (and perturbs the choice a little).
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { GenerationConfig, NemotronHConfig } from '@nemotron-ts/core';
import { writeFolderAtomically } from '@nemotron-ts/hub';
import { getCpuDevice, noGrad, tensor } from '@nemotron-ts/kernels';
import { NemotronHForCausalLM } from '../../src/pretrained';
import { specialId, writeTokenizerFiles } from '../../src/tiny-model';

/** Bumped whenever the recipe changes, so an old folder is rebuilt. */
const RECIPE = 1;

const TEXT =
  'Nemotron-H is a hybrid language model. Most of its layers are Mamba2 state space mixers, which ' +
  'carry a fixed-size state from token to token; a few are attention layers, which look back at every ' +
  'token; the rest are plain or mixture-of-experts feed-forward layers. This small model runs in ' +
  'TypeScript on WebGPU, and it generates one token at a time, keeping each layer state in a cache. ';

function tinyConfig(): NemotronHConfig {
  return NemotronHConfig.create({
    pattern: 'M*M-ME',
    vocabSize: 264,
    hiddenSize: 128,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
    headDim: 32,
    mambaNumHeads: 8,
    mambaHeadDim: 16,
    nGroups: 2,
    ssmStateSize: 16,
    chunkSize: 16,
    intermediateSize: 256,
    nRoutedExperts: 4,
    numExpertsPerTok: 2,
    moeIntermediateSize: 64,
    moeSharedExpertIntermediateSize: 128,
    padTokenId: specialId('<pad>'),
    bosTokenId: specialId('<s>'),
    eosTokenId: specialId('</s>'),
    extra: { torch_dtype: 'float32', nemotron_ts_tiny_recipe: RECIPE },
  });
}

/**
 * Overwrites the embeddings (scaled up, so the token dominates the residual stream) and lm_head
 * (row v = Σ_t P(v | t) · ê_t, the byte bigrams of TEXT) of a freshly initialised model.
 */
async function writeBigramHead(model: NemotronHForCausalLM): Promise<void> {
  const { vocabSize: V, hiddenSize: H } = model.config;
  const emb = await model.model.embeddings.weight.toFloat32();
  const bytes = new TextEncoder().encode(TEXT);
  // Unit directions; the bytes of TEXT made exactly orthogonal (Gram–Schmidt), so the head reads
  // the current byte's bigram row without crosstalk from the others.
  const used = [...new Set(bytes)];
  const unit = new Float32Array(V * H);
  const normalise = (t: number) => {
    const row = unit.subarray(t * H, (t + 1) * H);
    const norm = Math.hypot(...row);
    for (let j = 0; j < H; j++) row[j] = row[j]! / norm;
  };
  unit.set(emb);
  used.forEach((t, i) => {
    const row = unit.subarray(t * H, (t + 1) * H);
    for (const prev of used.slice(0, i)) {
      const other = unit.subarray(prev * H, (prev + 1) * H);
      let dot = 0;
      for (let j = 0; j < H; j++) dot += row[j]! * other[j]!;
      for (let j = 0; j < H; j++) row[j]! -= dot * other[j]!;
    }
    normalise(t);
  });
  for (let t = 0; t < V; t++) if (!used.includes(t)) normalise(t);
  const counts = new Float64Array(V * V);
  const totals = new Float64Array(V);
  for (let i = 0; i + 1 < bytes.length; i++) {
    counts[bytes[i]! * V + bytes[i + 1]!]!++;
    totals[bytes[i]!]!++;
  }
  // Logits ≈ SCALE · P(next | current) for the current byte's (normalised, √H-long) embedding.
  const SCALE = 14;
  const head = new Float32Array(V * H);
  for (let t = 0; t < V; t++) {
    if (totals[t] === 0) continue;
    for (let v = 0; v < V; v++) {
      const p = counts[t * V + v]! / totals[t]!;
      if (p === 0) continue;
      for (let j = 0; j < H; j++) head[v * H + j]! += ((SCALE * p) / Math.sqrt(H)) * unit[t * H + j]!;
    }
  }
  const device = model.lmHead.weight.device;
  noGrad(() => {
    // RMS 8: each block's output (its input is normalised) stays small next to the token.
    model.setTensor(
      'model.embeddings.weight',
      tensor(
        unit.map((x) => 8 * x * Math.sqrt(H)),
        [V, H],
        { device },
      ),
    );
    model.setTensor('lm_head.weight', tensor(head, [V, H], { device }));
  });
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** A tiny model's folder at `dir`, built first when missing or made by an older recipe. */
export async function ensureTinyModel(dir: string): Promise<string> {
  const configPath = join(dir, 'config.json');
  if ((await exists(join(dir, 'model.safetensors'))) && (await exists(join(dir, 'tokenizer.json'))) && (await exists(configPath))) {
    const saved = (await Bun.file(configPath).json()) as { nemotron_ts_tiny_recipe?: number };
    if (saved.nemotron_ts_tiny_recipe === RECIPE) return dir;
  }
  const model = NemotronHForCausalLM.fromConfig(tinyConfig(), { seed: 7, device: getCpuDevice() });
  try {
    await writeBigramHead(model);
    model.generationConfig = new GenerationConfig({
      doSample: true,
      temperature: 0.7,
      topK: 8,
      maxNewTokens: 96,
      eosTokenId: specialId('</s>'),
      padTokenId: specialId('<pad>'),
      bosTokenId: specialId('<s>'),
    });
    // Weights and tokenizer appear together (two first runs at once, or one killed midway, never leave a model without its tokenizer).
    await writeFolderAtomically(dir, async (temp) => {
      await model.savePretrained(temp);
      await writeTokenizerFiles(temp);
    });
  } finally {
    model.dispose();
  }
  return dir;
}
