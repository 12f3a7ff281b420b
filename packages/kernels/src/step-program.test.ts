import { describe, expect, test } from 'bun:test';
import { full, tensor, zeros } from './creation';
import { getCpuDevice, type Device } from './device/device';
import type { WebGpuDevice } from './device/webgpu-device';
import { add, mul } from './ops/elementwise/elementwise';
import { copyInto } from './ops/layout/layout';
import { StepProgram } from './step-program';
import { testGpu } from './testing';

const gpu = await testGpu();

/** acc += x · counter; counter += 1 — a step whose only changing value lives on the device. */
async function counterRun(device: Device, runs: number): Promise<{ acc: Float32Array; counter: number; dispatches: number }> {
  const x = tensor(
    Float32Array.from({ length: 37 }, (_, i) => i * 0.5 - 3),
    [37],
    { device },
  );
  const acc = zeros([37], { device });
  const counter = full([1], 1, { device });
  const program = new StepProgram(device, () => {
    copyInto(acc, add(acc, mul(x, counter)));
    copyInto(counter, add(counter, 1));
  });
  for (let i = 0; i < runs; i++) program.run();
  const out = { acc: (await acc.data()) as Float32Array, counter: (await counter.data())[0]!, dispatches: program.recordedDispatches };
  program.dispose();
  for (const t of [x, acc, counter]) t.dispose();
  return out;
}

describe('StepProgram', () => {
  test('replays match running the step every time (CPU reference)', async () => {
    const ref = await counterRun(getCpuDevice(), 5);
    expect(ref.counter).toBe(6);
    expect(ref.acc[0]).toBeCloseTo(-3 * 15);
    if (!gpu) return;
    const got = await counterRun(gpu, 5);
    expect(got.counter).toBe(6);
    expect(got.dispatches).toBe(5); // mul, add, copy; add, copy
    expect(Array.from(got.acc)).toEqual(Array.from(ref.acc));
  });

  test.if(gpu !== null)('owns the buffers freed while recording: later tensors are never overwritten by replays', async () => {
    const device = gpu!;
    const before = device.memoryStats().liveBytes;
    const x = full([1000], 2, { device });
    const out = zeros([1000], { device });
    const program = new StepProgram(device, () => copyInto(out, add(mul(x, x), x)));
    program.run();
    program.run(); // records: the temporaries mul(x, x) and the sum are freed into the recording
    const bystander = full([1000], 7, { device });
    program.run();
    program.run();
    expect(Array.from(await bystander.data()).every((v) => v === 7)).toBe(true);
    expect(Array.from(await out.data()).every((v) => v === 6)).toBe(true);
    program.dispose();
    for (const t of [x, out, bystander]) t.dispose();
    expect(device.memoryStats().liveBytes).toBe(before);
  });

  test.if(gpu !== null)('a step that uploads is run directly every time; kept tensors are refused', async () => {
    const device = gpu as WebGpuDevice;
    const x = full([4], 1, { device });
    expect(() => device.record(() => void tensor([1, 2, 3, 4], [4], { device }).dispose())).toThrow(/upload while recording/);
    const upload = new StepProgram(device, () => copyInto(x, add(x, tensor([1, 2, 3, 4], [4], { device }))));
    for (let i = 0; i < 3; i++) upload.run();
    expect(upload.isRecordable).toBe(false);
    expect(Array.from(await x.data())).toEqual([4, 7, 10, 13]);
    upload.dispose();
    copyInto(x, full([1], 1, { device }));
    expect(() => device.record(() => void add(x, 1))).toThrow(/kept 1 tensor/);
    x.dispose();
  });
});
