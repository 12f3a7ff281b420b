/**
 * Worker device specs: the native CPU backend (`native`, `cpu:native`, `native:N`), the cores
 * shared between native workers without a count, bad specs refused naming them, and workers
 * reporting the device and threads they opened.
 */
import { afterEach, describe, expect, test } from 'bun:test';
import { availableParallelism } from 'node:os';
import { getNativeDevice, nativeUnavailableReason } from '@nemotron-ts/kernels';
import { parseWorkerDevice, resolveDevices, WorkerGroup } from '../src';

describe('device specs', () => {
  test('native specs parse with and without a thread count', () => {
    expect(parseWorkerDevice('native')).toEqual({ options: { kind: 'native' } });
    expect(parseWorkerDevice('cpu:native')).toEqual({ options: { kind: 'native' } });
    expect(parseWorkerDevice('native:3')).toEqual({ options: { kind: 'native' }, threads: 3 });
    expect(parseWorkerDevice(' cpu:native:1 ')).toEqual({ options: { kind: 'native' }, threads: 1 });
    expect(parseWorkerDevice('cpu')).toEqual({ options: { kind: 'cpu' } });
    expect(() => parseWorkerDevice('native:0')).toThrow("device 'native:0': the thread count must be an integer ≥ 1, got '0'");
    expect(() => parseWorkerDevice('native:two')).toThrow("got 'two'");
    expect(() => parseWorkerDevice('cpu:2')).toThrow('give native:2');
    expect(() => parseWorkerDevice('tpu')).toThrow('native[:THREADS]');
  });

  test('native workers without a count share the cores; counts given are kept', () => {
    expect(resolveDevices(['native'], 2, 'cpu', 8)).toEqual(['native:4', 'native:4']);
    expect(resolveDevices(['cpu:native'], 3, 'cpu', 8)).toEqual(['native:2', 'native:2', 'native:2']);
    expect(resolveDevices(['native:1', 'native'], 2, 'cpu', 5)).toEqual(['native:1', 'native:4']);
    expect(resolveDevices(['native'], 4, 'cpu', 2)).toEqual(['native:1', 'native:1', 'native:1', 'native:1']);
    expect(resolveDevices(['cpu', 'native'], 2, 'cpu', 2)).toEqual(['cpu', 'native:2']);
    expect(resolveDevices(undefined, 2, 'cpu', 8)).toEqual(['cpu', 'cpu']);
  });
});

const groups: WorkerGroup[] = [];
afterEach(async () => {
  for (const g of groups.splice(0)) await g.shutdown();
});

describe('native workers', () => {
  const native = getNativeDevice();
  test.skipIf(!native)(
    `each worker opens the native backend with its threads${native ? '' : ` (skipped: ${nativeUnavailableReason()})`}`,
    async () => {
      const g = await WorkerGroup.start({ size: 2, service: 'debug', devices: ['native:1', 'cpu:native:2'], startTimeoutMs: 120_000 });
      groups.push(g);
      expect(g.opened).toEqual([
        { device: 'cpu:native', threads: 1 },
        { device: 'cpu:native', threads: 2 },
      ]);
      const shared = await WorkerGroup.start({ size: 2, service: 'debug', devices: ['cpu', 'native'], startTimeoutMs: 120_000 });
      groups.push(shared);
      expect(shared.devices).toEqual(['cpu', `native:${availableParallelism()}`]);
      expect(shared.opened).toEqual([
        { device: 'cpu', threads: null },
        { device: 'cpu:native', threads: availableParallelism() },
      ]);
    },
    180_000,
  );
});
