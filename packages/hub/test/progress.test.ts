/** The terminal progress bar, drawn into a fake TTY with a fake clock. */
import { expect, test } from 'bun:test';
import { formatBytes, formatDuration, ProgressBar } from '../src';

test('draws file and total lines with speed and ETA, redrawing in place', () => {
  const writes: string[] = [];
  let now = 0;
  const bar = new ProgressBar({ write: (s: string) => writes.push(s), columns: 100 }, () => now);
  const total = 4_000_000;
  bar.update({ file: 'model-00001-of-00002.safetensors', bytes: 0, total: 2_000_000, overallBytes: 0, overallTotal: total });
  now = 1000;
  bar.update({ file: 'model-00001-of-00002.safetensors', bytes: 1_000_000, total: 2_000_000, overallBytes: 1_000_000, overallTotal: total });
  now = 1050; // within the redraw interval: not drawn
  bar.update({ file: 'model-00001-of-00002.safetensors', bytes: 1_050_000, total: 2_000_000, overallBytes: 1_050_000, overallTotal: total });
  expect(writes).toHaveLength(2);
  const [fileLine, totalLine] = writes[1]!
    .replace('\x1b[1A\r', '')
    .split('\n')
    .map((l) => l.replace('\x1b[2K', ''));
  expect(writes[1]!.startsWith('\x1b[1A\r')).toBe(true);
  expect(fileLine).toStartWith('model-00001-of-00002.safetensors ');
  expect(fileLine).toContain(' 50% 1.00 MB/2.00 MB');
  expect(totalLine).toContain(' 25% 1.00 MB/4.00 MB  1.00 MB/s  ETA 0:03');
  expect(fileLine!.length).toBeLessThan(100);
  // A finished file is always drawn.
  now = 1060;
  bar.update({ file: 'model-00001-of-00002.safetensors', bytes: 2_000_000, total: 2_000_000, overallBytes: 2_000_000, overallTotal: total });
  expect(writes).toHaveLength(3);
  bar.finish();
  expect(writes.at(-1)).toBe('\n');
});

test('sizes and durations', () => {
  expect(formatBytes(999)).toBe('999 B');
  expect(formatBytes(1_234_567)).toBe('1.23 MB');
  expect(formatBytes(17_900_000_000)).toBe('17.9 GB');
  expect(formatDuration(5)).toBe('0:05');
  expect(formatDuration(3725)).toBe('1:02:05');
  expect(formatDuration(NaN)).toBe('--:--');
});
