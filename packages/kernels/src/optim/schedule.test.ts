import { describe, expect, test } from 'bun:test';
import { constantSchedule, warmupCosineSchedule, warmupLinearSchedule } from './schedule';

describe('learning-rate schedules', () => {
  test('constant', () => {
    expect([0, 5, 1e6].map(constantSchedule())).toEqual([1, 1, 1]);
  });

  test('warmup + cosine to a min ratio', () => {
    const s = warmupCosineSchedule({ warmupSteps: 4, totalSteps: 14, minRatio: 0.1 });
    expect([0, 1, 3].map(s)).toEqual([0.25, 0.5, 1]);
    expect(s(4)).toBe(1);
    // Halfway through the decay: the midpoint of 1 and 0.1.
    expect(s(9)).toBeCloseTo(0.55, 12);
    expect(s(6)).toBeCloseTo(0.1 + 0.9 * 0.5 * (1 + Math.cos(Math.PI * 0.2)), 12);
    expect(s(14)).toBeCloseTo(0.1, 12);
    expect(s(100)).toBeCloseTo(0.1, 12);
  });

  test('warmup + linear decay', () => {
    const s = warmupLinearSchedule({ warmupSteps: 2, totalSteps: 12 });
    expect([0, 1, 2, 7, 12, 20].map(s)).toEqual([0.5, 1, 1, 0.5, 0, 0]);
    expect(warmupLinearSchedule({ warmupSteps: 0, totalSteps: 4, minRatio: 0.2 })(2)).toBeCloseTo(0.6, 12);
  });

  test('bad options', () => {
    expect(() => warmupCosineSchedule({ warmupSteps: 5, totalSteps: 3 })).toThrow(/totalSteps must be an integer ≥ warmupSteps/);
    expect(() => warmupLinearSchedule({ warmupSteps: 0, totalSteps: 3, minRatio: 2 })).toThrow(/minRatio must be in \[0, 1\]/);
  });
});
