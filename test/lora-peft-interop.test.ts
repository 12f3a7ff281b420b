/**
 * LoRA interop with Hugging Face PEFT, with adapter folders shaped exactly like PEFT 0.20's output
 * on transformers' native NemotronHForCausalLM: every adapter_config.json field PEFT writes,
 * target_modules as the list PEFT writes from its set, keys `base_model.model.model.layers.N…`, and
 * no adapters on the stacked routed experts. Such an adapter applied through `nemotron forward` /
 * `generate --lora` must give the logits and greedy ids of the base weights merged by hand
 * (W + (alpha / r) · B A in f64). Also: the remote-code key prefix, adapters from the Hub cache by
 * repo id, per-expert keys refused clearly, and defaults PEFT's Mamba guard accepts.
 */
import { afterAll, describe, expect, spyOn, test } from 'bun:test';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SafetensorsReader, saveSafetensors } from '@nemotron-ts/hub';
import { Generator, getCpuDevice, noGrad, tensor, type Tensor } from '@nemotron-ts/kernels';
import { DEFAULT_LORA_TARGETS, NemotronHForCausalLM, applyLora, loadLoraAdapter, saveLoraAdapter } from '../src';
import { FIXTURES_DIR, relDiff } from './support/fixtures';
import { nemotron } from './support/cli';

const cpu = getCpuDevice();
const scratch = await mkdtemp(join(tmpdir(), 'nemotron-peft-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));

/** Mamba, attention, MoE with a shared expert, MLP: every kind of layer PEFT adapts. */
const BASE = join(FIXTURES_DIR, 'moe_flat_rsf2.5');
const R = 4;
const ALPHA = 12;
/** The order PEFT's set of target names happened to be written in. */
const PEFT_TARGETS = ['v_proj', 'in_proj', 'down_proj', 'q_proj', 'o_proj', 'k_proj', 'up_proj'];

/** adapter_config.json as PEFT 0.20 writes it (json.dumps of LoraConfig.to_dict(), sorted keys, indent 2). */
function peftAdapterConfigJson(targetModules: string[] | string = PEFT_TARGETS): string {
  const config = {
    alora_invocation_tokens: null,
    alpha_pattern: {},
    arrow_config: null,
    auto_mapping: null,
    base_model_name_or_path: 'nvidia/tiny-nemotron-h',
    bias: 'none',
    corda_config: null,
    ensure_weight_tying: false,
    eva_config: null,
    exclude_modules: null,
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    loftq_config: {},
    lora_alpha: ALPHA,
    lora_bias: false,
    lora_dropout: 0.05,
    lora_ga_config: null,
    megatron_config: null,
    megatron_core: 'megatron.core',
    modules_to_save: null,
    monteclora_config: null,
    peft_type: 'LORA',
    peft_version: '0.20.1.dev0',
    qalora_group_size: 16,
    r: R,
    rank_pattern: {},
    revision: null,
    target_modules: targetModules,
    target_parameters: null,
    task_type: 'CAUSAL_LM',
    trainable_token_indices: null,
    use_bdlora: null,
    use_dora: false,
    use_qalora: false,
    use_rslora: false,
  };
  return JSON.stringify(config, null, 2);
}

/** Checkpoint weights a PEFT adapter on the native class adapts: not the routed experts (stacked there). */
const ADAPTED_WEIGHT = /^backbone\.(layers\.\d+\.mixer\.(?:shared_experts\.)?(?:in_proj|q_proj|k_proj|v_proj|o_proj|up_proj|down_proj))\.weight$/;

interface HostTensor {
  data: Float32Array;
  shape: number[];
}

interface PeftAdapter {
  /** Adapter tensors under PEFT's native keys. */
  tensors: Map<string, HostTensor>;
  /** The checkpoint with every adapted weight merged by hand. */
  merged: Map<string, HostTensor>;
}

/** A PEFT-style adapter with random A and B for the base checkpoint, and the base merged with it in f64. */
async function buildAdapter(): Promise<PeftAdapter> {
  const reader = await SafetensorsReader.open(join(BASE, 'model.safetensors'));
  const g = new Generator(11);
  const scale = ALPHA / R;
  const tensors = new Map<string, HostTensor>();
  const merged = new Map<string, HostTensor>();
  for (const name of reader.names()) {
    const t = await reader.readHost(name);
    expect(t.dtype).toBe('F32');
    const w = { data: Float32Array.from(t.data as Float32Array), shape: [...t.shape] };
    merged.set(name, w);
    const layer = ADAPTED_WEIGHT.exec(name)?.[1];
    if (!layer) continue;
    const [out, inp] = w.shape as [number, number];
    const a = Float32Array.from({ length: R * inp }, () => (2 * g.uniform() - 1) / Math.sqrt(inp));
    const b = Float32Array.from({ length: out * R }, () => g.normal() * 0.08);
    tensors.set(`base_model.model.model.${layer}.lora_A.weight`, { data: a, shape: [R, inp] });
    tensors.set(`base_model.model.model.${layer}.lora_B.weight`, { data: b, shape: [out, R] });
    for (let o = 0; o < out; o++) {
      for (let i = 0; i < inp; i++) {
        let delta = 0;
        for (let k = 0; k < R; k++) delta += b[o * R + k]! * a[k * inp + i]!;
        w.data[o * inp + i] = w.data[o * inp + i]! + scale * delta;
      }
    }
  }
  return { tensors, merged };
}

async function writeTensors(path: string, tensors: Map<string, HostTensor>): Promise<void> {
  const device = new Map<string, Tensor>([...tensors].map(([k, t]) => [k, tensor(t.data, t.shape, { device: cpu })]));
  await saveSafetensors(path, device);
  for (const t of device.values()) t.dispose();
}

async function writeAdapter(dir: string, tensors: Map<string, HostTensor>, configJson = peftAdapterConfigJson()): Promise<string> {
  await mkdir(dir, { recursive: true });
  await writeTensors(join(dir, 'adapter_model.safetensors'), tensors);
  await writeFile(join(dir, 'adapter_config.json'), configJson);
  return dir;
}

async function logitsFile(path: string): Promise<Float32Array> {
  return (await (await SafetensorsReader.open(path)).readHost('logits')).data as Float32Array;
}

const adapter = await buildAdapter();
const adapterDir = await writeAdapter(join(scratch, 'peft-native'), adapter.tensors);
const inputIds = [
  [5, 77, 13, 200, 9, 31, 140, 2, 64, 18, 250],
  [1, 8, 120, 33, 47, 3, 99, 12, 6, 210, 44],
];

async function logitsOf(m: NemotronHForCausalLM): Promise<Float32Array> {
  const { logits } = noGrad(() => m.forward({ inputIds }));
  const values = await logits.toFloat32();
  logits.dispose();
  return values;
}

describe('a PEFT-written adapter', () => {
  test('through --lora: logits and greedy ids equal the base merged by hand', async () => {
    const mergedDir = join(scratch, 'merged');
    await mkdir(mergedDir, { recursive: true });
    await copyFile(join(BASE, 'config.json'), join(mergedDir, 'config.json'));
    await writeTensors(join(mergedDir, 'model.safetensors'), adapter.merged);
    const input = join(scratch, 'inputs.json');
    await Bun.write(input, JSON.stringify({ input_ids: inputIds }));

    const run = (model: string, out: string, ...extra: string[]) => {
      const r = nemotron('forward', '--model', model, '--input', input, '--out', out, '--device', 'cpu', ...extra);
      expect({ model, code: r.code, stderr: r.code === 0 ? '' : r.stderr }).toEqual({ model, code: 0, stderr: '' });
    };
    run(BASE, join(scratch, 'lora.safetensors'), '--lora', adapterDir);
    run(mergedDir, join(scratch, 'merged.safetensors'));
    run(BASE, join(scratch, 'base.safetensors'));
    const withLora = await logitsFile(join(scratch, 'lora.safetensors'));
    const merged = await logitsFile(join(scratch, 'merged.safetensors'));
    // The adapter matters (the test can fail), and unmerged equals merged.
    expect(relDiff(await logitsFile(join(scratch, 'base.safetensors')), merged)).toBeGreaterThan(0.05);
    const rel = relDiff(withLora, merged);
    expect({ rel, ok: rel <= 1e-5 }).toEqual({ rel, ok: true });

    const greedy = (model: string, ...extra: string[]) => {
      const r = nemotron(
        'generate',
        '--model',
        model,
        '--input',
        input,
        '--greedy',
        '--ignore-eos',
        '--max-new-tokens',
        '8',
        '--json',
        '--device',
        'cpu',
        ...extra,
      );
      expect({ model, code: r.code, stderr: r.code === 0 ? '' : r.stderr }).toEqual({ model, code: 0, stderr: '' });
      return (JSON.parse(r.stdout) as { ids: number[][] }).ids;
    };
    const ids = greedy(BASE, '--lora', adapterDir);
    expect(ids).toEqual(greedy(mergedDir));
    expect(ids).not.toEqual(greedy(BASE));
  }, 120_000);

  test("forward --grads --lora: base gradients equal the merged model's; the adapters' follow by the chain rule", async () => {
    const input = join(scratch, 'labelled.json');
    await Bun.write(input, JSON.stringify({ input_ids: inputIds, labels: inputIds }));
    const run = (model: string, out: string, ...extra: string[]) => {
      const r = nemotron('forward', '--model', model, '--input', input, '--out', out, '--grads', '--device', 'cpu', ...extra);
      expect({ model, code: r.code, stderr: r.code === 0 ? '' : r.stderr }).toEqual({ model, code: 0, stderr: '' });
      return SafetensorsReader.open(out);
    };
    const unmerged = await run(BASE, join(scratch, 'grads-lora.safetensors'), '--lora', adapterDir);
    const merged = await run(join(scratch, 'merged'), join(scratch, 'grads-merged.safetensors'));
    const host = async (reader: SafetensorsReader, key: string) => (await reader.readHost(key)).data as Float32Array;
    for (const key of merged.names().filter((k) => k.startsWith('grad/'))) {
      const [got, want] = [await host(unmerged, key), await host(merged, key)];
      // Zero gradients (the correction bias, a buffer) must stay zero.
      const rel = want.some((v) => v !== 0) ? relDiff(got, want) : Math.max(...got.map(Math.abs));
      expect({ key, rel, ok: rel <= 1e-4 }).toEqual({ key, rel, ok: true });
    }
    // dL/dA = s · Bᵀ · dL/dW and dL/dB = s · dL/dW · Aᵀ, with dL/dW the merged weight's gradient (f64 here).
    const layer = 'layers.1.mixer.q_proj';
    const g = await host(merged, `grad/backbone.${layer}.weight`);
    const {
      data: a,
      shape: [, inp],
    } = adapter.tensors.get(`base_model.model.model.${layer}.lora_A.weight`)!;
    const {
      data: b,
      shape: [out],
    } = adapter.tensors.get(`base_model.model.model.${layer}.lora_B.weight`)!;
    const s = ALPHA / R;
    const gradA = new Float64Array(R * inp!);
    const gradB = new Float64Array(out! * R);
    for (let o = 0; o < out!; o++) {
      for (let i = 0; i < inp!; i++) {
        const gw = g[o * inp! + i]!;
        for (let k = 0; k < R; k++) {
          gradA[k * inp! + i] += s * b[o * R + k]! * gw;
          gradB[o * R + k] += s * gw * a[k * inp! + i]!;
        }
      }
    }
    const relA = relDiff(await host(unmerged, `grad/base_model.model.model.${layer}.lora_A.weight`), gradA);
    const relB = relDiff(await host(unmerged, `grad/base_model.model.model.${layer}.lora_B.weight`), gradB);
    expect({ relA, relB, ok: relA <= 1e-3 && relB <= 1e-3 }).toEqual({ relA, relB, ok: true });
  }, 120_000);

  test('keys of the remote-code class (base_model.model.backbone.…) load the same; per-expert adapters fail clearly', async () => {
    const remote = new Map([...adapter.tensors].map(([k, t]) => [k.replace('base_model.model.model.', 'base_model.model.backbone.'), t]));
    const remoteDir = await writeAdapter(join(scratch, 'peft-remote'), remote);
    const a = await NemotronHForCausalLM.fromPretrained(BASE, { device: cpu });
    const handle = await loadLoraAdapter(a, adapterDir);
    // PEFT's semantics: up_proj/down_proj adapt the MLP and shared expert; the stacked routed experts are skipped.
    expect(handle.adapters.has('model.layers.5.mixer.shared_experts.up_proj')).toBe(true);
    expect(handle.adapters.has('model.layers.4.mixer.down_proj')).toBe(true);
    expect(handle.skipped).toContain('model.layers.5.mixer.experts.up_proj');
    expect(handle.adapters.size * 2).toBe(adapter.tensors.size);
    expect(handle.config).toMatchObject({ r: R, alpha: ALPHA, dropout: 0.05 });
    const b = await NemotronHForCausalLM.fromPretrained(BASE, { device: cpu });
    await loadLoraAdapter(b, remoteDir);
    expect(await logitsOf(b)).toEqual(await logitsOf(a));

    const perExpert = new Map(remote);
    perExpert.set('base_model.model.backbone.layers.2.mixer.experts.0.up_proj.lora_A.weight', { data: new Float32Array(R * 64), shape: [R, 64] });
    const perExpertDir = await writeAdapter(join(scratch, 'peft-per-expert'), perExpert);
    const c = await NemotronHForCausalLM.fromPretrained(BASE, { device: cpu });
    await expect(loadLoraAdapter(c, perExpertDir)).rejects.toThrow(
      /'base_model\.model\.backbone\.layers\.2\.mixer\.experts\.0\.up_proj\.lora_A\.weight', an adapter on one routed expert/,
    );
    for (const m of [a, b, c]) m.dispose();
  });

  test("target_modules as one regular expression (PEFT's full match), on native or remote-code names", async () => {
    const listed = await NemotronHForCausalLM.fromPretrained(BASE, { device: cpu });
    const expected = await logitsOf((await loadLoraAdapter(listed, adapterDir), listed));
    for (const [name, pattern] of [
      ['native', String.raw`.*\.(in_proj|[qkvo]_proj|up_proj|down_proj)`],
      ['remote-code', String.raw`backbone\.layers\.\d+\.mixer\.(shared_experts\.)?(in_proj|[qkvo]_proj|up_proj|down_proj)`],
    ] as const) {
      const dir = await writeAdapter(join(scratch, `peft-regex-${name}`), adapter.tensors, peftAdapterConfigJson(pattern));
      const m = await NemotronHForCausalLM.fromPretrained(BASE, { device: cpu });
      const handle = await loadLoraAdapter(m, dir);
      expect(handle.config.targetModules).toBe(pattern);
      expect(await logitsOf(m)).toEqual(expected);
      m.dispose();
    }
    listed.dispose();
  });

  test('from the Hub by repo id (through the HF cache)', async () => {
    const cacheDir = join(scratch, 'hub-cache');
    const commit = 'c'.repeat(40);
    const repo = join(cacheDir, 'models--some-org--nemotron-lora');
    await mkdir(join(repo, 'refs'), { recursive: true });
    await writeFile(join(repo, 'refs', 'main'), commit);
    await writeAdapter(join(repo, 'snapshots', commit), adapter.tensors);
    const fromHub = await NemotronHForCausalLM.fromPretrained(BASE, { device: cpu });
    await loadLoraAdapter(fromHub, 'some-org/nemotron-lora', { cacheDir, localFilesOnly: true });
    const fromFolder = await NemotronHForCausalLM.fromPretrained(BASE, { device: cpu });
    await loadLoraAdapter(fromFolder, adapterDir);
    expect(await logitsOf(fromHub)).toEqual(await logitsOf(fromFolder));
    await expect(loadLoraAdapter(fromHub, 'some-org/missing', { cacheDir, localFilesOnly: true })).rejects.toThrow(
      /some-org\/missing@main is not in the cache/,
    );
    fromHub.dispose();
    fromFolder.dispose();
  });
});

describe("PEFT's Mamba guard", () => {
  test('the default targets adapt no out_proj or conv1d; asking for out_proj works with one warning', async () => {
    expect(DEFAULT_LORA_TARGETS.some((t) => t === 'out_proj' || t === 'conv1d')).toBe(false);
    const warn = spyOn(console, 'warn').mockImplementation(() => {});
    try {
      const m = await NemotronHForCausalLM.fromPretrained(BASE, { device: cpu });
      const handle = applyLora(m, { r: 2, alpha: 4, targetModules: DEFAULT_LORA_TARGETS });
      expect(handle.peftRefused).toEqual([]);
      expect([...handle.adapters.keys()].filter((n) => /\.(out_proj|conv1d)$/.test(n))).toEqual([]);
      expect(handle.adapters.has('model.layers.0.mixer.in_proj')).toBe(true);
      const dir = join(scratch, 'ours-default');
      await saveLoraAdapter(m, dir);
      const config = JSON.parse(await Bun.file(join(dir, 'adapter_config.json')).text()) as Record<string, unknown>;
      expect(config.target_modules).toEqual([...DEFAULT_LORA_TARGETS]);
      // Every field PEFT 0.20 writes, so stock PEFT reads it as it reads its own.
      const peftFields = Object.keys(JSON.parse(peftAdapterConfigJson()) as object).filter((k) => k !== 'peft_version');
      expect(Object.keys(config).sort()).toEqual(peftFields.sort());
      expect((await SafetensorsReader.open(join(dir, 'adapter_model.safetensors'))).names().every((k) => k.startsWith('base_model.model.model.layers.'))).toBe(
        true,
      );
      expect(warn).not.toHaveBeenCalled();
      m.dispose();

      const withOut = await NemotronHForCausalLM.fromPretrained(BASE, { device: cpu });
      const h = applyLora(withOut, { r: 2, alpha: 4, targetModules: ['in_proj', 'out_proj'] });
      expect(h.peftRefused).toEqual(['model.layers.0.mixer.out_proj', 'model.layers.3.mixer.out_proj']);
      expect(h.adapters.has('model.layers.3.mixer.out_proj')).toBe(true);
      expect(warn).toHaveBeenCalledTimes(1);
      expect(String(warn.mock.calls[0]![0])).toMatch(/out_proj .*stock PEFT refuses out_proj and conv1d on nemotron_h/);
      withOut.dispose();
      const withConv = await NemotronHForCausalLM.fromPretrained(BASE, { device: cpu });
      expect(applyLora(withConv, { r: 2, alpha: 4, targetModules: ['q_proj', 'conv1d'] }).peftRefused).toEqual([
        'model.layers.0.mixer.conv1d',
        'model.layers.3.mixer.conv1d',
      ]);
      expect(warn).toHaveBeenCalledTimes(2);
      withConv.dispose();
    } finally {
      warn.mockRestore();
    }
  });
});
