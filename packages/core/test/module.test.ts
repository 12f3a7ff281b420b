import { describe, expect, test } from 'bun:test';
import { add, backward, getCpuDevice, sumAll, tensor, type Tensor } from '@nemotron-ts/kernels';
import { testGpu } from '@nemotron-ts/kernels/testing';
import { Embedding, Linear, Module, ModuleList, type Placement } from '../src';

const cpu = getCpuDevice();
const gpu = await testGpu();

/** A small tree: an embedding, two blocks (linear + f32 scale + buffer), and a head. */
class Block extends Module {
  readonly proj: Linear;
  constructor(placement: Placement) {
    super();
    this.proj = this.registerModule('proj', new Linear(3, 5, { ...placement, bias: true }));
    this.createParameter('scale', [5], placement, { keepF32: true });
    this.createBuffer('running', [2], placement);
  }
  get scale(): Tensor {
    return this.slotTensor('scale');
  }
  get running(): Tensor {
    return this.slotTensor('running');
  }
}

class Toy extends Module {
  readonly embed: Embedding;
  readonly blocks: ModuleList<Block>;
  readonly head: Linear;
  constructor(placement: Placement = { device: cpu }) {
    super();
    this.embed = this.registerModule('embed', new Embedding(7, 3, placement));
    this.blocks = this.registerModule('blocks', new ModuleList([new Block(placement), new Block(placement)]));
    this.head = this.registerModule('head', new Linear(3, 7, placement));
  }
}

function filled(t: Tensor, seed: number): Tensor {
  return tensor(
    Float32Array.from({ length: t.size }, (_, i) => seed + i / 8),
    t.shape,
    { device: t.device },
  );
}

async function fillAll(m: Module): Promise<void> {
  let seed = 0;
  for (const [name, t] of m.stateDict()) {
    const v = filled(t, seed++);
    m.setTensor(name, v);
    v.dispose();
  }
}

describe('Module', () => {
  test('names, kinds, order and counts', () => {
    const m = new Toy();
    expect(m.namedTensors().map((t) => `${t.name}:${t.kind}${t.keepF32 ? ':f32' : ''}`)).toEqual([
      'embed.weight:parameter',
      'blocks.0.scale:parameter:f32',
      'blocks.0.running:buffer',
      'blocks.0.proj.weight:parameter',
      'blocks.0.proj.bias:parameter',
      'blocks.1.scale:parameter:f32',
      'blocks.1.running:buffer',
      'blocks.1.proj.weight:parameter',
      'blocks.1.proj.bias:parameter',
      'head.weight:parameter',
    ]);
    expect(m.namedBuffers().map(([n]) => n)).toEqual(['blocks.0.running', 'blocks.1.running']);
    expect(m.numParameters()).toBe(21 + 2 * (5 + 15 + 5) + 21);
    expect(m.parameters().every((p) => p.requiresGrad)).toBe(true);
    expect(m.namedBuffers().every(([, b]) => !b.requiresGrad)).toBe(true);
    expect(m.namedModules().map(([n]) => n)).toEqual(['', 'embed', 'blocks', 'blocks.0', 'blocks.0.proj', 'blocks.1', 'blocks.1.proj', 'head']);
    expect(m.blocks.length).toBe(2);
    expect([...m.blocks]).toEqual([m.blocks.at(0), m.blocks.at(1)]);
    expect(() => m.blocks.at(2)).toThrow(/outside 0..1/);
    expect(m.head.bias).toBeNull();
    expect(m.blocks.at(0).proj.bias!.shape).toEqual([5]);
    m.dispose();
  });

  test('registration errors', () => {
    class Bad extends Module {
      constructor(name: string, twice = false) {
        super();
        this.createParameter(name, [1], { device: cpu });
        if (twice) this.registerModule(name, new Linear(1, 1, { device: cpu }));
      }
    }
    expect(() => new Bad('a.b')).toThrow(/invalid member name 'a.b'/);
    expect(() => new Bad('w', true)).toThrow(/'w' is already registered/);
  });

  test('train / eval / requiresGrad_ reach every module', () => {
    const m = new Toy();
    expect(m.blocks.at(1).proj.training).toBe(true);
    m.eval();
    expect(m.namedModules().every(([, x]) => !x.training)).toBe(true);
    m.train();
    expect(m.blocks.at(1).training).toBe(true);
    m.requiresGrad_(false);
    expect(m.parameters().some((p) => p.requiresGrad)).toBe(false);
    m.dispose();
  });

  test('zeroGrad drops every accumulated gradient', async () => {
    const m = new Toy();
    await fillAll(m);
    const x = tensor(Float32Array.of(0.5, -1, 2), [1, 3], { device: cpu });
    backward(add(sumAll(m.head.forward(x)), sumAll(m.blocks.at(0).proj.forward(x))));
    expect(m.parameters().some((p) => p.grad !== null)).toBe(true);
    m.zeroGrad();
    expect(m.parameters().every((p) => p.grad === null)).toBe(true);
    m.dispose();
  });

  test('stateDict / loadStateDict round trip shares storage and keeps dtypes', async () => {
    const a = new Toy();
    await fillAll(a);
    const b = new Toy({ device: cpu, dtype: 'bf16' });
    expect(b.blocks.at(0).scale.dtype).toBe('f32');
    const report = b.loadStateDict(a.stateDict());
    expect(report).toEqual({ missing: [], unexpected: [], mismatched: [], ignored: [] });
    // Same dtype: shared storage. bf16 slots: a rounded copy.
    expect(b.blocks.at(0).scale.storage).toBe(a.blocks.at(0).scale.storage);
    expect(b.head.weight.dtype).toBe('bf16');
    expect(Array.from(await b.head.weight.toFloat32())).toEqual(Array.from(await a.head.weight.toFloat32()));
    expect(b.head.weight.requiresGrad).toBe(true);
    expect(b.blocks.at(0).running.requiresGrad).toBe(false);
    a.dispose();
    // b still owns its reference.
    expect((await b.blocks.at(0).scale.toFloat32())[4]).toBe(1 + 4 / 8);
    b.dispose();
  });

  test('loadStateDict reports missing, unexpected and mis-shaped tensors', async () => {
    const m = new Toy();
    await fillAll(m);
    const before = await m.head.weight.toFloat32();
    const state = new Map(m.stateDict());
    state.delete('embed.weight');
    const extra = tensor([1, 2], [2], { device: cpu });
    const wrong = tensor(new Float32Array(6), [2, 3], { device: cpu });
    state.set('blocks.9.scale', extra);
    state.set('head.weight', wrong);
    expect(() => m.loadStateDict(state)).toThrow(
      /missing 1 \(embed.weight\); unexpected 1 \(blocks.9.scale\); mis-shaped 1 \(head.weight: expected \[7, 3\], got \[2, 3\]\)/,
    );
    // Strict failure changed nothing.
    expect(Array.from(await m.head.weight.toFloat32())).toEqual(Array.from(before));
    const report = m.loadStateDict(state, { strict: false });
    expect(report.missing).toEqual(['embed.weight']);
    expect(report.unexpected).toEqual(['blocks.9.scale']);
    expect(report.mismatched).toEqual([{ name: 'head.weight', expected: [7, 3], actual: [2, 3] }]);
    expect(Array.from(await m.head.weight.toFloat32())).toEqual(Array.from(before));
    extra.dispose();
    wrong.dispose();
    m.dispose();
  });

  test('getTensor / setTensor errors', () => {
    const m = new Toy();
    expect(() => m.getTensor('blocks.2.scale')).toThrow(/no tensor 'blocks.2.scale' \(no module '2'\)/);
    expect(() => m.getTensor('head.bias')).toThrow(/no tensor 'head.bias'/);
    const t = tensor([1, 2, 3], [3], { device: cpu });
    expect(() => m.setTensor('blocks.0.scale', t)).toThrow(/shape \[3\] does not match \[5\]/);
    t.dispose();
    m.dispose();
    expect(() => m.head.weight).toThrow(/after dispose/);
  });

  test('to({ dtype }) casts floating tensors except keep-f32 ones', async () => {
    const m = new Toy();
    await fillAll(m);
    const scale = await m.blocks.at(0).scale.toFloat32();
    await m.to({ dtype: 'bf16' });
    expect(m.namedTensors().map((t) => t.tensor.dtype)).toEqual(['bf16', 'f32', 'bf16', 'bf16', 'bf16', 'f32', 'bf16', 'bf16', 'bf16', 'bf16']);
    expect(Array.from(await m.blocks.at(0).scale.toFloat32())).toEqual(Array.from(scale));
    expect(m.head.weight.requiresGrad).toBe(true);
    await m.to({ dtype: 'f32' });
    expect(m.head.weight.dtype).toBe('f32');
    m.dispose();
  });

  test('dispose releases every tensor', () => {
    const start = cpu.memoryStats().liveBuffers;
    const m = new Toy();
    expect(cpu.memoryStats().liveBuffers).toBe(start + 10);
    m.dispose();
    expect(cpu.memoryStats().liveBuffers).toBe(start);
    expect(m.isDisposed).toBe(true);
  });

  if (gpu) {
    test('to({ device }) moves to WebGPU and back', async () => {
      const m = new Toy();
      await fillAll(m);
      const expected = await Promise.all(m.namedTensors().map((t) => t.tensor.toFloat32()));
      await m.to({ device: gpu, dtype: 'bf16' });
      expect(m.namedTensors().every((t) => t.tensor.device === gpu)).toBe(true);
      await m.to({ device: cpu, dtype: 'f32' });
      const got = await Promise.all(m.namedTensors().map((t) => t.tensor.toFloat32()));
      // Values survive (bf16 rounding aside: these values are exact in bf16).
      expect(got.map((g) => Array.from(g))).toEqual(expected.map((e) => Array.from(e)));
      expect(m.namedTensors().every((t) => t.tensor.device === cpu)).toBe(true);
      m.dispose();
    });
  }
});
