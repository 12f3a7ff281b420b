/**
 * Incremental decoding and generation on random models (odd sizes, every layer kind, biases, a
 * time_step_limit that clamps): decode steps equal recomputing the whole sequence, a prompt
 * prefilled in pieces equals one call, the cache's select/reorder/reset/growth/memory, padded rows
 * equal their prompts alone, and generate's sampling, EOS, stop strings and streaming.
 */
import { describe, expect, test } from 'bun:test';
import { Generator, getCpuDevice, narrow, noGrad, tensor, tidy, type Device, type Tensor, type WebGpuDevice } from '@nemotron-ts/kernels';
import { deviceLabel, expectClose, testGpus, testNative } from '@nemotron-ts/kernels/testing';
import { NemotronHConfig, NemotronHForCausalLM, NemotronHybridCache, type NemotronHConfigInit } from '../src';

const cpu = getCpuDevice();
const gpus = await testGpus();
const gpu = gpus[0] ?? null;
const native = testNative();
const devices: Device[] = [cpu, ...(native ? [native] : []), ...gpus];

const INIT: NemotronHConfigInit = {
  pattern: 'M*-EM*',
  vocabSize: 97,
  hiddenSize: 40,
  numAttentionHeads: 4,
  numKeyValueHeads: 2,
  headDim: 12,
  mambaNumHeads: 6,
  mambaHeadDim: 8,
  nGroups: 2,
  ssmStateSize: 8,
  convKernel: 4,
  chunkSize: 4,
  intermediateSize: 72,
  nRoutedExperts: 6,
  numExpertsPerTok: 2,
  moeIntermediateSize: 24,
  moeSharedExpertIntermediateSize: 40,
  useBias: true,
  mlpBias: true,
  // Clamps a good share of the heads' dt (init draws dt in [0.001, 0.1]).
  timeStepLimit: [0.004, 0.05],
};
const config = NemotronHConfig.create(INIT);

function model(device: Device, init: Partial<NemotronHConfigInit> = {}, seed = 3): NemotronHForCausalLM {
  return NemotronHForCausalLM.fromConfig(NemotronHConfig.create({ ...INIT, ...init }), { seed, device }).requiresGrad_(false);
}

function ids(rows: number, length: number, seed: number): number[][] {
  const g = new Generator(seed);
  return Array.from({ length: rows }, () => Array.from({ length }, () => Math.floor(g.uniform() * config.vocabSize)));
}

async function logitsOf(m: NemotronHForCausalLM, inputIds: number[][], cache?: NemotronHybridCache, attentionMask?: number[][]): Promise<Float32Array> {
  const { logits } = noGrad(() => m.forward({ inputIds, cache, attentionMask }));
  const values = (await logits.data()) as Float32Array;
  logits.dispose();
  return values;
}

/** Row b, position t of [B, L, V] logits. */
function at(logits: Float32Array, length: number, b: number, t: number): Float32Array {
  const V = config.vocabSize;
  return logits.subarray((b * length + t) * V, (b * length + t + 1) * V);
}

describe('decode equals recompute', () => {
  for (const device of devices) {
    test(`${deviceLabel(device)}: every decode step's logits equal the full forward's last position, across cache growth`, async () => {
      const m = model(device);
      const prompt = ids(2, 9, 1);
      const next = ids(2, 10, 2);
      const cache = new NemotronHybridCache(config, { batch: 2, device, blockSize: 4 });
      await logitsOf(m, prompt, cache);
      const capacities = new Set([cache.capacity]);
      for (let t = 0; t < next[0]!.length; t++) {
        const step = await logitsOf(
          m,
          next.map((row) => [row[t]!]),
          cache,
        );
        capacities.add(cache.capacity);
        const seen = prompt.map((row, b) => [...row, ...next[b]!.slice(0, t + 1)]);
        const full = await logitsOf(m, seen);
        for (let b = 0; b < 2; b++)
          expectClose(at(step, 1, b, 0), at(full, seen[0]!.length, b, seen[0]!.length - 1), { rtol: 1e-5, what: `step ${t} row ${b}` });
      }
      expect(cache.length).toBe(19);
      expect(cache.capacity).toBe(20);
      expect([...capacities]).toEqual([12, 16, 20]); // grew at 13 and 17 positions
      cache.dispose();
      m.dispose();
    });
  }

  for (const device of devices) {
    test(`${deviceLabel(device)}: a decode step's hidden states (outputHiddenStates) equal the full forward's at the last position`, async () => {
      const m = model(device);
      const prompt = ids(2, 6, 5);
      const next = ids(2, 1, 6);
      const cache = new NemotronHybridCache(config, { batch: 2, device });
      await logitsOf(m, prompt, cache);
      using step = noGrad(() => m.forward({ inputIds: next, cache, outputHiddenStates: true }));
      const seen = prompt.map((row, b) => [...row, ...next[b]!]);
      using full = noGrad(() => m.forward({ inputIds: seen, outputHiddenStates: true }));
      const H = config.hiddenSize;
      const L = seen[0]!.length;
      expect(step.hiddenStates!.length).toBe(config.layerKinds.length + 1);
      for (const [i, h] of step.hiddenStates!.entries()) {
        expect(h.shape).toEqual([2, 1, H]);
        const got = (await h.data()) as Float32Array;
        const want = (await full.hiddenStates![i]!.data()) as Float32Array;
        for (let b = 0; b < 2; b++)
          expectClose(got.subarray(b * H, (b + 1) * H), want.subarray((b * L + L - 1) * H, (b * L + L) * H), {
            rtol: 1e-5,
            what: `hidden state ${i} row ${b}`,
          });
      }
      expectClose(at((await step.logits.data()) as Float32Array, 1, 1, 0), at((await full.logits.data()) as Float32Array, L, 1, L - 1), {
        rtol: 1e-5,
        what: 'logits',
      });
      cache.dispose();
      m.dispose();
    });
  }

  test('the finite time_step_limit matters (the test above would see a missing clamp)', async () => {
    const clamped = model(cpu);
    const free = model(cpu, { timeStepLimit: [0, Infinity] });
    const prompt = ids(1, 12, 4);
    const a = await logitsOf(clamped, prompt);
    const b = await logitsOf(free, prompt);
    let diff = 0;
    for (let i = 0; i < a.length; i++) diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    expect(diff).toBeGreaterThan(1e-3);
    clamped.dispose();
    free.dispose();
  });
});

describe('chunked prefill', () => {
  for (const device of devices) {
    test(`${deviceLabel(device)}: pieces of 5, 1 and 7 tokens equal one call (logits, states, the next decode step)`, async () => {
      const m = model(device);
      const prompt = ids(2, 13, 5);
      const whole = new NemotronHybridCache(config, { batch: 2, device });
      const all = await logitsOf(m, prompt, whole);
      const pieces = new NemotronHybridCache(config, { batch: 2, device, blockSize: 8 });
      let start = 0;
      for (const n of [5, 1, 7]) {
        const part = await logitsOf(
          m,
          prompt.map((row) => row.slice(start, start + n)),
          pieces,
        );
        for (let b = 0; b < 2; b++)
          for (let t = 0; t < n; t++) expectClose(at(part, n, b, t), at(all, 13, b, start + t), { rtol: 1e-5, what: `position ${start + t} row ${b}` });
        start += n;
      }
      for (let i = 0; i < config.numHiddenLayers; i++) {
        const [a, b] = [whole.layer(i), pieces.layer(i)];
        if (a?.kind === 'mamba' && b?.kind === 'mamba') {
          expectClose(await b.conv.toFloat32(), await a.conv.toFloat32(), { rtol: 1e-6, what: `conv state ${i}` });
          expectClose(await b.ssm.toFloat32(), await a.ssm.toFloat32(), { rtol: 1e-5, what: `ssm state ${i}` });
        } else if (a?.kind === 'attention' && b?.kind === 'attention') {
          for (const key of ['k', 'v'] as const) {
            const head = async (t: Tensor) => tidy(() => narrow(t, 2, 0, 13)).toFloat32();
            expectClose(await head(b[key]), await head(a[key]), { rtol: 1e-6, what: `${key} cache ${i}` });
          }
        }
      }
      const token = [[7], [8]];
      expectClose(await logitsOf(m, token, pieces), await logitsOf(m, token, whole), { rtol: 1e-5, what: 'decode after the pieces' });
      whole.dispose();
      pieces.dispose();
      m.dispose();
    });
  }
});

describe('NemotronHybridCache', () => {
  for (const device of devices) {
    test(`${deviceLabel(device)}: select and reorder keep the chosen rows' states`, async () => {
      const m = model(device);
      const prompt = ids(3, 7, 6);
      const cache = new NemotronHybridCache(config, { batch: 3, device });
      await logitsOf(m, prompt, cache);
      cache.reorder([2, 0, 1]);
      cache.select([0, 1]); // rows 2 and 0 of the prompt
      const direct = new NemotronHybridCache(config, { batch: 2, device });
      await logitsOf(m, [prompt[2]!, prompt[0]!], direct);
      for (const token of [
        [[3], [4]],
        [[5], [6]],
      ]) {
        expectClose(await logitsOf(m, token, cache), await logitsOf(m, token, direct), { rtol: 1e-6, what: 'after select' });
      }
      expect(cache.batch).toBe(2);
      expect(() => cache.reorder([0])).toThrow(/use select/);
      expect(() => cache.select([2])).toThrow(/outside \[0, 2\)/);
      cache.dispose();
      direct.dispose();
      m.dispose();
    });
  }

  test('reset forgets everything; memory stats count the tensors; dispose frees them', async () => {
    const device = gpu ?? cpu;
    const m = model(device);
    const before = device.memoryStats().liveBytes;
    const cache = new NemotronHybridCache(config, { batch: 2, device, blockSize: 16 });
    const stats = cache.memoryStats();
    const attention = 2 * 2 * (2 * config.numKeyValueHeads * 16 * config.headDim * 4);
    const mamba = 2 * (2 * config.convDim * config.convKernel * 4 + 2 * config.mambaNumHeads * config.mambaHeadDim * config.ssmStateSize * 4);
    expect(stats).toEqual({ attentionBytes: attention, mambaBytes: mamba, maskBytes: 4, totalBytes: attention + mamba + 4, batch: 2, length: 0, capacity: 16 });
    const prompt = ids(2, 6, 7);
    const fresh = await logitsOf(m, prompt, cache);
    await logitsOf(m, [[1], [2]], cache);
    cache.reset();
    expect(cache.length).toBe(0);
    expectClose(await logitsOf(m, prompt, cache), fresh, { rtol: 0, what: 'after reset' });
    // Padding allocates the key mask.
    cache.reset();
    await logitsOf(m, prompt, cache, [
      [0, 1, 1, 1, 1, 1],
      [1, 1, 1, 1, 1, 1],
    ]);
    expect(cache.keyMask?.shape).toEqual([2, 16]);
    cache.dispose();
    expect(cache.isDisposed).toBe(true);
    expect(device.memoryStats().liveBytes).toBe(before);
    expect(() => cache.layer(0)).toThrow(/disposed/);
    m.dispose();
  });

  test('clear errors', async () => {
    const m = model(cpu);
    const cache = new NemotronHybridCache(config, { batch: 2, device: cpu });
    expect(() => m.forward({ inputIds: [[1, 2]], cache })).toThrow(/cache holds 2 rows, the inputs 1/);
    expect(() => m.forward({ inputIds: [[1, 2, 3]], cuSeqlens: [0, 1, 3], cache: new NemotronHybridCache(config, { batch: 1, device: cpu }) })).toThrow(
      /cuSeqlens/,
    );
    await logitsOf(
      m,
      [
        [1, 2],
        [3, 4],
      ],
      cache,
    );
    expect(() => m.forward({ inputIds: [[1], [2]], attentionMask: [[0], [1]], cache })).toThrow(/takes no attention mask/);
    const other = NemotronHConfig.create({ ...INIT, pattern: 'M-' });
    expect(() => m.forward({ inputIds: [[1], [2]], cache: new NemotronHybridCache(other, { batch: 2, device: cpu }) })).toThrow(/another model/);
    expect(() => new NemotronHybridCache(config, { batch: 0, device: cpu })).toThrow(/batch must be a positive integer/);
    cache.dispose();
    m.dispose();
  });
});

describe('generate', () => {
  const plain = { useBias: false }; // HF's padding semantics assume no in_proj bias

  for (const device of devices) {
    test(`${deviceLabel(device)}: a left-padded batch generates what each prompt alone would`, async () => {
      const m = model(device, plain);
      const prompts = [ids(1, 3, 8)[0]!, ids(1, 9, 9)[0]!, ids(1, 6, 10)[0]!];
      const alone = await Promise.all(prompts.map(async (p) => await m.generate({ inputIds: [p], maxNewTokens: 7, eosTokenId: null, outputStepLogits: true })));
      const width = 9;
      const padded = prompts.map((p) => [...new Array(width - p.length).fill(0), ...p]);
      const mask = prompts.map((p) => [...new Array(width - p.length).fill(0), ...new Array(p.length).fill(1)]);
      const batch = await m.generate({ inputIds: padded, attentionMask: mask, maxNewTokens: 7, eosTokenId: null, outputStepLogits: true });
      prompts.forEach((_, b) => {
        expect(batch.tokens[b]).toEqual(alone[b]!.tokens[0]!);
        expectClose(batch.stepLogits![b]!, alone[b]!.stepLogits![0]!, { rtol: 1e-5, what: `row ${b}` });
      });
      m.dispose();
    });

    test(`${deviceLabel(device)}: a prompt prefilled in pieces generates what one piece does`, async () => {
      const m = model(device, plain);
      const inputIds = ids(2, 21, 12);
      const run = (prefillPiece: number) => m.generate({ inputIds, maxNewTokens: 5, eosTokenId: null, outputStepLogits: true, prefillPiece });
      const whole = await run(64);
      for (const piece of [8, 5]) {
        const pieced = await run(piece);
        expect(pieced.tokens).toEqual(whole.tokens);
        pieced.stepLogits!.forEach((row, b) => expectClose(row, whole.stepLogits![b]!, { rtol: 1e-4, what: `piece ${piece}, row ${b}` }));
      }
      await expect(m.generate({ inputIds, maxNewTokens: 1, prefillPiece: 0 })).rejects.toThrow(/prefillPiece must be a positive integer, got 0/);
      m.dispose();
    });

    if (device.kind === 'cpu') {
      test(`${deviceLabel(device)}: generate leaves no freed buffers pooled (its cache and temporaries go back)`, async () => {
        const m = model(device, plain);
        const live = device.memoryStats().liveBytes;
        await m.generate({ inputIds: ids(2, 40, 13), maxNewTokens: 3, eosTokenId: null, prefillPiece: 16 });
        expect(device.memoryStats()).toMatchObject({ liveBytes: live, pooledBytes: 0, pooledBuffers: 0 });
        m.dispose();
      });

      test(`${deviceLabel(device)}: the prefill's freed temporaries leave the pool before the decode steps run`, async () => {
        const m = model(device, plain);
        const pooled: number[] = [];
        // The prefill's activations ([2, 37, 40] f32 and wider) are pooled sizes; a decode step's
        // ([2, 1, …]) are below the pool's minimum, so nothing should be pooled while decoding.
        await m.generate({
          inputIds: ids(2, 37, 17),
          maxNewTokens: 4,
          eosTokenId: null,
          onToken: () => {
            pooled.push(device.memoryStats().pooledBytes);
          },
        });
        expect(pooled).toEqual([0, 0, 0, 0]);
        m.dispose();
      });
    }

    test(`${deviceLabel(device)}: seeded sampling is reproducible; top-k 1 and a near-zero temperature are greedy`, async () => {
      const m = model(device, plain);
      const inputIds = ids(2, 5, 11);
      const run = (o: object) => m.generate({ inputIds, maxNewTokens: 8, eosTokenId: null, ...o }).then((r) => r.tokens);
      const greedy = await run({});
      const sampled = await run({ doSample: true, seed: 5, topK: 0, temperature: 1.5 });
      expect(await run({ doSample: true, seed: 5, topK: 0, temperature: 1.5 })).toEqual(sampled);
      expect(await run({ doSample: true, seed: 6, topK: 0, temperature: 1.5 })).not.toEqual(sampled);
      expect(sampled).not.toEqual(greedy);
      expect(await run({ doSample: true, seed: 5, topK: 1 })).toEqual(greedy);
      expect(await run({ doSample: true, seed: 5, temperature: 1e-5 })).toEqual(greedy);
      // Processors on the device: a strong repetition penalty changes the greedy tokens.
      expect(await run({ repetitionPenalty: 50 })).not.toEqual(greedy);
      m.dispose();
    });
  }

  test('EOS finishes a row (pad after it), stop strings finish a row, events stream, the loop stops when all are done', async () => {
    const device = gpu ?? cpu;
    const m = model(device, plain);
    const inputIds = ids(2, 5, 12);
    const greedy = (await m.generate({ inputIds, maxNewTokens: 10, eosTokenId: null })).tokens;
    const eos = greedy[0]![2]!;
    const withEos = await m.generate({ inputIds, maxNewTokens: 10, eosTokenId: [eos], padTokenId: 96 });
    const firstEos = (row: number[]) => row.indexOf(eos);
    expect(withEos.finishReasons[0]).toBe('eos');
    expect(withEos.tokens[0]!.slice(0, 3)).toEqual(greedy[0]!.slice(0, 3));
    expect(withEos.tokens[0]!.slice(3).every((t) => t === 96)).toBe(true);
    const row1End = firstEos(greedy[1]!);
    expect(withEos.tokens[1]!.slice(0, row1End < 0 ? 10 : row1End + 1)).toEqual(greedy[1]!.slice(0, row1End < 0 ? 10 : row1End + 1));

    // A tokenizer that spells each id as a letter; the stop string is row 1's tokens 1..2.
    const tokenizer = { decode: (xs: readonly number[]) => xs.map((x) => String.fromCharCode(97 + (x % 26))).join('') };
    const stop = tokenizer.decode(greedy[1]!.slice(1, 3));
    const events: { step: number; tokens: readonly number[]; text: readonly string[] | null }[] = [];
    const stream = m.generateStream({ inputIds, maxNewTokens: 10, eosTokenId: null, stopStrings: [stop], tokenizer, onToken: (e) => events.push(e) });
    let yielded = 0;
    let result;
    for (;;) {
      const next = await stream.next();
      if (next.done) {
        result = next.value;
        break;
      }
      expect(next.value.step).toBe(yielded++);
    }
    expect(events.length).toBe(yielded);
    expect(result.finishReasons[1]).toBe('stop_string');
    expect(result.text![1]!.endsWith(stop)).toBe(true);
    expect(events.map((e) => e.text![0]).join('')).toBe(tokenizer.decode(result.tokens[0]!));
    // Row 0 may stop on the same string; if not, it runs to the length limit.
    expect(result.stats.steps).toBe(result.finishReasons[0] === 'length' ? 10 : Math.max(...result.finishReasons.map((_, b) => result.tokens[b]!.length)));
    m.dispose();
  });

  for (const g of gpus) {
    test(`${deviceLabel(g)}: the decode step is recorded once; no kernel is compiled as the cache grows`, async () => {
      const device = g as WebGpuDevice;
      const m = model(device, plain);
      const cache = new NemotronHybridCache(config, { batch: 1, device, blockSize: 4 });
      await logitsOf(m, ids(1, 5, 13), cache);
      for (let t = 0; t < 3; t++) await logitsOf(m, [[t]], cache);
      const compiled = device.pipelines.size;
      for (let t = 0; t < 20; t++) await logitsOf(m, [[t]], cache);
      expect(device.pipelines.size).toBe(compiled);
      cache.dispose();
      m.dispose();
    });

    test(`${deviceLabel(g)}: 9 rows (beyond the fused decode GEMV) generate the CPU backend's tokens`, async () => {
      const inputIds = ids(9, 4, 14);
      const run = async (device: Device) => {
        const m = model(device, plain);
        const { tokens } = await m.generate({ inputIds, maxNewTokens: 4, eosTokenId: null });
        m.dispose();
        return tokens;
      };
      expect(await run(g)).toEqual(await run(cpu));
    });
  }

  for (const device of devices) {
    test(`${deviceLabel(device)}: non-finite logits stop generation with an error naming the row and step`, async () => {
      const m = model(device, plain);
      // Token 7's embedding holds a NaN: only the row that contains it goes wrong.
      const table = (await m.getTensor('model.embeddings.weight').data()) as Float32Array;
      table[7 * config.hiddenSize + 3] = NaN;
      m.setTensor('model.embeddings.weight', tensor(table, [config.vocabSize, config.hiddenSize], { device }));
      await expect(
        m.generate({
          inputIds: [
            [1, 2, 3],
            [4, 7, 5],
          ],
          maxNewTokens: 4,
          eosTokenId: null,
        }),
      ).rejects.toThrow(/logits of row 1 at step 0 hold NaN or infinite values/);
      expect((await m.generate({ inputIds: [[1, 2, 3]], maxNewTokens: 3, eosTokenId: null })).tokens[0]!.length).toBe(3);
      m.dispose();
    });
  }

  for (const device of devices) {
    test(`${deviceLabel(device)}: a NaN in one entry of an MLP up_proj is reported, not hidden by relu²`, async () => {
      const m = model(device, plain);
      const name = 'model.layers.2.mixer.up_proj.weight'; // pattern 'M*-EM*': layer 2 is the MLP
      const up = m.getTensor(name);
      const values = (await up.toFloat32()).slice();
      values[5 * config.hiddenSize + 7] = NaN;
      m.setTensor(name, tensor(values, up.shape, { device, dtype: up.dtype }));
      const inputIds = ids(2, 4, 15);
      const logits = await logitsOf(m, inputIds);
      expect(logits.some((v) => Number.isNaN(v))).toBe(true);
      await expect(m.generate({ inputIds, maxNewTokens: 3, eosTokenId: null })).rejects.toThrow(/hold NaN or infinite values/);
      m.dispose();
    });
  }

  test.skipIf(!native)(
    'cpu:native: the whole-step native decode (one call per token) generates what the per-op path does (padding, biases, dt clamp, MoE with group top-k, f32 and bf16)',
    async () => {
      const lib = native?.kind === 'cpu' ? native.native! : null;
      if (!lib) throw new Error('the native device has no library');
      const original = lib.symbols.nt_decode_step;
      let calls = 0;
      lib.symbols.nt_decode_step = (table) => {
        calls++;
        return original(table);
      };
      try {
        // Odd MoE sizes: 9 experts in 3 groups (top 2 groups), 3 per token.
        const moe = { nRoutedExperts: 9, numExpertsPerTok: 3, moeIntermediateSize: 13, moeSharedExpertIntermediateSize: 19, nGroup: 3, topkGroup: 2 };
        for (const [dtype, init] of [
          ['f32', { pattern: 'M*-M*-' }],
          ['bf16', { pattern: 'M*-M*-' }],
          ['f32', { pattern: 'ME*E-', ...moe, routedScalingFactor: 2.5 }],
          ['bf16', { pattern: 'ME*E-', ...moe, normTopkProb: false }],
        ] as const) {
          const m = NemotronHForCausalLM.fromConfig(NemotronHConfig.create({ ...INIT, ...init }), { seed: 4, device: native!, dtype }).requiresGrad_(false);
          const options = {
            inputIds: [[0, 0, ...ids(1, 6, 21)[0]!]],
            attentionMask: [[0, 0, 1, 1, 1, 1, 1, 1]],
            maxNewTokens: 9,
            eosTokenId: null,
            outputStepLogits: true,
          };
          calls = 0;
          const fused = await m.generate(options);
          expect(calls, 'native decode steps').toBe(options.maxNewTokens - 1);
          process.env.NEMOTRON_FUSED_DECODE = '0';
          const perOp = await m.generate(options).finally(() => delete process.env.NEMOTRON_FUSED_DECODE);
          expect(calls, 'the per-op path made no whole-step call').toBe(options.maxNewTokens - 1);
          expect(fused.tokens).toEqual(perOp.tokens);
          expectClose(fused.stepLogits![0]!, perOp.stepLogits![0]!, { rtol: 1e-4, what: `${dtype} ${init.pattern} step logits` });
          m.dispose();
        }
      } finally {
        lib.symbols.nt_decode_step = original;
      }
    },
  );

  test('clear errors', async () => {
    const m = model(cpu, plain);
    await expect(m.generate({ inputIds: [[1, 2]], stopStrings: ['x'] })).rejects.toThrow(/stopStrings need a tokenizer/);
    await expect(m.generate({ inputIds: [[1, 2]], maxNewTokens: 0 })).rejects.toThrow(/maxNewTokens must be a positive integer/);
    await expect(m.generate({ inputIds: [[1, 2]], eosTokenId: 500 })).rejects.toThrow(/outside the vocabulary/);
    await expect(m.generate({ inputIds: [[1, 2]], attentionMask: [[0, 0]] })).rejects.toThrow(/all padding/);
    // Generation continues after the last position: padding must come first (HF's padding_side='left').
    await expect(
      m.generate({
        inputIds: [
          [1, 2, 3, 4, 5],
          [1, 2, 3, 4, 5],
        ],
        attentionMask: [
          [1, 1, 1, 1, 1],
          [1, 1, 1, 0, 0],
        ],
      }),
    ).rejects.toThrow(/generate: attentionMask\[1\] is right-padded \(position 3 is padding after the last token\)/);
    await expect(m.generate({ inputIds: [[1, 2, 3, 4]], attentionMask: [[1, 0, 1, 1]] })).rejects.toThrow(
      /generate: attentionMask\[0\] has padding between tokens \(position 1\)/,
    );
    const cache = new NemotronHybridCache(config, { batch: 1, device: cpu });
    expect(() => m.forward({ inputIds: [[1, 2, 3]], attentionMask: [[1, 1, 0]], cache })).toThrow(/forward: attentionMask\[0\] is right-padded/);
    await logitsOf(m, [[1, 2]], cache);
    expect(() => m.forward({ inputIds: [[1, 2, 3]], attentionMask: [[0, 1, 1]], cache })).toThrow(/padding belongs in the first piece of a cached prompt/);
    cache.dispose();
    await expect(m.generate({ inputIds: [[1, 2]], doSample: true, temperature: 0 })).rejects.toThrow(/temperature must be a positive number/);
    m.dispose();
  });
});
