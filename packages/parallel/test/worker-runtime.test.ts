import { afterEach, describe, expect, test } from 'bun:test';
import { decodeMessage, encodeMessage, HostTensor, WorkerFailure, WorkerGroup } from '../src';
import { rejection } from '../src/testing';

const groups: WorkerGroup[] = [];
afterEach(async () => {
  for (const g of groups.splice(0)) await g.shutdown();
});

async function start(size: number, heartbeatTimeoutMs?: number): Promise<WorkerGroup> {
  const g = await WorkerGroup.start({
    size,
    service: 'debug',
    devices: ['cpu'],
    heartbeatTimeoutMs: heartbeatTimeoutMs ?? 10_000,
    startTimeoutMs: 20_000,
    describe: (r) => `rank ${r}`,
  });
  groups.push(g);
  return g;
}

describe('wire format', () => {
  test('tensors travel as transferred buffers, control as MessagePack', () => {
    const values = Float32Array.of(1.5, -2, 3.25, 7);
    const t = new HostTensor('f32', [2, 2], values);
    const { message, transfer } = encodeMessage({ step: 3, x: t, list: [t, { ids: HostTensor.fromI32(Int32Array.of(5, 6, 7), [3]) }] });
    expect(message.buffers.length).toBe(3); // the repeated tensor is copied once
    expect(transfer.length).toBe(4);
    // The header holds no float payload: only names, numbers and shapes.
    expect(message.header.byteLength).toBeLessThan(120);
    const back = decodeMessage(message) as { step: number; x: HostTensor; list: [HostTensor, { ids: HostTensor }] };
    expect(back.step).toBe(3);
    expect([...back.x.data]).toEqual([1.5, -2, 3.25, 7]);
    expect(back.x.shape).toEqual([2, 2]);
    expect([...back.list[1].ids.data]).toEqual([5, 6, 7]);
    expect(back.list[1].ids.dtype).toBe('i32');
  });
});

describe('worker group', () => {
  test('ready handshake, calls on every worker, tensors both ways', async () => {
    const g = await start(3);
    const t = () => HostTensor.fromF32(Float32Array.of(1, 2, 3), [3]);
    const out = await g.callAll<{ rank: number; device: string; args: { x: HostTensor } }>('echo', () => ({ x: t() }));
    expect(out.map((o) => o.rank)).toEqual([0, 1, 2]);
    expect(out.every((o) => o.device === 'cpu')).toBe(true);
    expect([...out[2]!.args.x.data]).toEqual([1, 2, 3]);
    expect(g.bytesSent).toBe(36);
    expect(g.bytesReceived).toBe(36);
    const sent = t();
    await g.call(0, 'echo', sent);
    expect((await rejection(g.call(1, 'echo', sent))).message).toContain('was already sent (sending moves its buffer)');
  });

  test('an error thrown by a request rejects that call only', async () => {
    const g = await start(2);
    expect((await rejection(g.call(1, 'throw'))).message).toContain('requested failure on rank 1');
    expect((await rejection(g.call(1, 'nope'))).message).toContain("debug: no method 'nope'");
    expect((await g.call<{ rank: number }>(1, 'echo')).rank).toBe(1);
  });

  test('a worker that exits mid-step fails the call naming the worker and the step, and every worker stops', async () => {
    const g = await start(2);
    const other = g.call(0, 'sleep', 5000, { step: 'other work' });
    const t0 = Date.now();
    const err = await g.call(1, 'exit', 7, { step: 'forward microbatch 1' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkerFailure);
    expect((err as Error).message).toBe("rank 1 exited (code 7) during 'forward microbatch 1'");
    expect((await rejection(other)).message).toContain('rank 1 exited');
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect((await rejection(g.call(0, 'echo'))).message).toContain('rank 1 exited');
  });

  test('a worker terminated from outside (killed) mid-step ends the call within seconds', async () => {
    const g = await start(2);
    const t0 = Date.now();
    const pending = g.call(0, 'sleep', 60_000, { step: 'backward microbatch 0' });
    // Kill the worker's thread behind the group's back, as a crash would.
    setTimeout(() => g.kill(0), 100);
    expect((await rejection(pending)).message).toContain("rank 0 exited (code 0) during 'backward microbatch 0'");
    expect(Date.now() - t0).toBeLessThan(10_000);
  });

  test('a hung worker (blocked event loop) is detected by its missing heartbeats', async () => {
    const g = await start(2, 3000);
    const t0 = Date.now();
    expect((await rejection(g.call(1, 'hang', null, { step: 'decode step 4' }))).message).toMatch(
      /rank 1 stopped responding \(no heartbeat for \d+ ms\) during 'decode step 4'/,
    );
    expect(Date.now() - t0).toBeLessThan(10_000);
  });

  test('a worker busy in synchronous work longer than the heartbeat timeout is not hung while it reports progress', async () => {
    const g = await start(1, 1000);
    expect(await g.call(0, 'busy', 2500, { step: 'long CPU step' })).toBeNull();
  });

  test('a call timeout ends a slow step', async () => {
    const g = await start(1);
    expect((await rejection(g.call(0, 'sleep', 30_000, { step: 'slow', timeoutMs: 300 }))).message).toContain("rank 0 timed out after 300 ms during 'slow'");
  });

  test('bad device specs are refused before any worker starts', async () => {
    expect((await rejection(WorkerGroup.start({ size: 2, service: 'debug', devices: ['cpu', 'tpu'] }))).message).toContain("device 'tpu' is not one of");
    expect((await rejection(WorkerGroup.start({ size: 3, service: 'debug', devices: ['cpu', 'cpu'] }))).message).toContain('2 given (cpu, cpu) for 3 workers');
    expect((await rejection(WorkerGroup.start({ size: 1, service: 'nope' }))).message).toContain("no service 'nope'");
  });
});
