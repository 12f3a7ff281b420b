// `bun run make-tiny`: trains the demo model that `npm start` runs and writes it to
// models/tiny-nemotron/ (an ordinary HF folder: config.json, generation_config.json,
// model.safetensors, byte-level tokenizer.json, tokenizer_config.json with a chat template, and
// training.json naming the text and settings it was trained with).
//
// A tiny Nemotron-H with every layer kind — Mamba2, attention, MLP, MoE (pattern `M*-E`) — and an
// MTP head, trained from the project's deterministic init with the project's own Trainer on the
// project's own prose: the README, the package READMEs and the guides in docs/guides (fenced code
// dropped), snapshotted in models/tiny-corpus.jsonl (`--refresh-corpus` rebuilds it from the
// current docs; the model then changes). Everything runs on the CPU backend (plain TypeScript, no
// GPU rounding differences), the data order and init are seeded, so two runs on the same text write
// the same bytes (compare `sha256sum models/tiny-nemotron/*`).
//
// Usage: bun run make-tiny [--out DIR] [--steps N] [--report DIR] [--refresh-corpus]   (report: the run's report.html, loss.svg)
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { Glob } from 'bun';
import { GenerationConfig, NemotronHConfig } from '@nemotron-ts/core';
import { loadTokenizer } from '@nemotron-ts/hub';
import { getCpuDevice } from '@nemotron-ts/kernels';
import { NemotronHForCausalLM } from '../src/pretrained';
import { TINY_TRAINED_DIR, specialId, writeTokenizerFiles } from '../src/tiny-model';
import { BlockSampler, Trainer } from '../src/train';
import { TrainingProgress } from '../src/train/progress';
import { RunReporter } from '../src/train/report';
import { cutBlocks, tokenizeDocuments } from '../src/train/token-blocks';

const root = join(import.meta.dir, '..');
const arg = (name: string): string | undefined => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
};

/** Bumped when the recipe changes. */
const RECIPE = 2;
const SEQ_LEN = 128;
const STEPS = Number(arg('steps') ?? 300);
const SETTINGS = { steps: STEPS, batchSize: 4, lr: 4e-3, minLr: 4e-4, warmup: Math.min(20, STEPS), weightDecay: 0.01, gradClip: 1, seed: 0, evalEvery: 40 };
const INIT_SEED = 11;

function tinyConfig(): NemotronHConfig {
  return NemotronHConfig.create({
    pattern: 'M*-E',
    vocabSize: 264,
    hiddenSize: 64,
    numAttentionHeads: 2,
    numKeyValueHeads: 1,
    headDim: 32,
    mambaNumHeads: 4,
    mambaHeadDim: 32,
    nGroups: 1,
    ssmStateSize: 16,
    chunkSize: 32,
    intermediateSize: 128,
    nRoutedExperts: 4,
    numExpertsPerTok: 2,
    moeIntermediateSize: 64,
    moeSharedExpertIntermediateSize: 64,
    numNextnPredictLayers: 1,
    mtpPattern: '*-',
    padTokenId: specialId('<pad>'),
    bosTokenId: specialId('<s>'),
    eosTokenId: specialId('</s>'),
    extra: { torch_dtype: 'float32', nemotron_ts_tiny_recipe: RECIPE },
  });
}

/** The snapshot of the training text: one {"path","text"} line per document, so a rerun trains on exactly the same bytes. */
const CORPUS_FILE = join(root, 'models', 'tiny-corpus.jsonl');

/** The project's own prose, in a fixed order: README, package READMEs, guides; fenced code dropped. */
async function docsCorpus(): Promise<{ path: string; text: string }[]> {
  const guides = [...new Glob('docs/guides/*.md').scanSync({ cwd: root })].sort();
  const paths = ['README.md', 'packages/kernels/README.md', 'packages/core/README.md', 'packages/hub/README.md', ...guides];
  const documents: { path: string; text: string }[] = [];
  for (const path of paths) {
    const text = await readFile(join(root, path), 'utf8').catch(() => null);
    if (text !== null) documents.push({ path, text: text.replace(/^```[^\n]*\n[\s\S]*?^```[^\n]*\n?/gm, '') });
  }
  return documents;
}

/** The training documents: the snapshot, rewritten from the docs first with --refresh-corpus (or when missing). */
async function corpus(): Promise<{ path: string; text: string }[]> {
  const saved = await readFile(CORPUS_FILE, 'utf8').catch(() => null);
  if (saved !== null && !process.argv.includes('--refresh-corpus')) {
    return saved
      .split('\n')
      .filter((line) => line !== '')
      .map((line, i) => {
        try {
          return JSON.parse(line) as { path: string; text: string };
        } catch {
          throw new Error(`${CORPUS_FILE}:${i + 1}: not valid JSON (rerun with --refresh-corpus to rebuild it from the docs)`);
        }
      });
  }
  const documents = await docsCorpus();
  await writeFile(`${CORPUS_FILE}.tmp`, `${documents.map((d) => JSON.stringify(d)).join('\n')}\n`);
  await rename(`${CORPUS_FILE}.tmp`, CORPUS_FILE);
  console.error(`make-tiny: wrote ${relative(root, CORPUS_FILE)} from ${documents.length} documents`);
  return documents;
}

const out = arg('out') ?? TINY_TRAINED_DIR;
const reportDir = arg('report') ?? join(root, '.cache', 'make-tiny');
const device = getCpuDevice();
const staging = join(dirname(out), `.${relative(dirname(out), out)}.partial-${process.pid}`);
await rm(staging, { recursive: true, force: true });
await mkdir(staging, { recursive: true });
try {
  await writeTokenizerFiles(staging);
  const tokenizer = await loadTokenizer(staging);
  const documents = await corpus();
  const sources = documents.map((d) => ({ path: d.path, sha256: createHash('sha256').update(d.text).digest('hex') }));
  const blocks = cutBlocks(
    tokenizeDocuments(
      documents.map((d) => d.text),
      tokenizer,
    ),
    SEQ_LEN,
    relative(root, CORPUS_FILE),
  );
  // Every 20th block held out for the eval curve (spread over the documents, never trained on).
  const evalRows = blocks.filter((_, i) => i % 20 === 10);
  const trainRows = blocks.filter((_, i) => i % 20 !== 10);
  console.error(
    `make-tiny: ${sources.length} documents, ${trainRows.length} training rows and ${evalRows.length} eval rows of ${SEQ_LEN} bytes; ${SETTINGS.steps} steps on ${device.describe()}`,
  );

  const model = NemotronHForCausalLM.fromConfig(tinyConfig(), { seed: INIT_SEED, device });
  const data = { train: new BlockSampler(trainRows, SETTINGS.seed), eval: evalRows, seqLen: SEQ_LEN };
  const reporter = new RunReporter({
    outDir: reportDir,
    settings: { model: 'tiny-nemotron (make-tiny)', ...SETTINGS, seq_len: SEQ_LEN, device: device.describe() },
  });
  await reporter.start();
  const progress = new TrainingProgress({ totalSteps: SETTINGS.steps });
  const trainer = new Trainer(model, data, {
    ...SETTINGS,
    outDir: null,
    onStep: (log) => {
      progress.step(log);
      reporter.step(log);
    },
    onEval: (log) => {
      progress.message(`step ${log.step}: eval loss ${log.eval_loss.toFixed(4)}`);
      reporter.eval(log);
    },
  });
  try {
    await trainer.train();
    progress.end();
    reporter.refresh();
    model.generationConfig = new GenerationConfig({
      doSample: true,
      temperature: 0.6,
      topK: 12,
      maxNewTokens: 160,
      eosTokenId: specialId('</s>'),
      padTokenId: specialId('<pad>'),
      bosTokenId: specialId('<s>'),
    });
    await model.savePretrained(staging);
  } finally {
    trainer.dispose();
    model.dispose();
  }
  await writeFile(
    join(staging, 'training.json'),
    `${JSON.stringify({ recipe: RECIPE, script: 'scripts/make-tiny.ts', device: 'cpu', init_seed: INIT_SEED, seq_len: SEQ_LEN, ...SETTINGS, sources }, null, 2)}\n`,
  );
  // Swap the finished folder in: a failed run leaves the previous model untouched.
  const old = `${staging}.old`;
  await rename(out, old).catch(() => undefined);
  await rename(staging, out);
  await rm(old, { recursive: true, force: true });
  console.error(`make-tiny: wrote ${relative(process.cwd(), out) || out}; report: ${join(reportDir, 'report.html')}`);
} catch (e) {
  await rm(staging, { recursive: true, force: true });
  throw e;
}
