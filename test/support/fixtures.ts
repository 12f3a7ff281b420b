/**
 * The golden fixtures under test/fixtures (see its README): case names from index.json, inputs,
 * manifest scalars, expected arrays, and the comparison the README recommends (max |diff| relative
 * to max |expected| per array).
 */
import { join } from 'node:path';
import { expect } from 'bun:test';
import { SafetensorsReader } from '@nemotron-ts/hub';

export const FIXTURES_DIR = join(import.meta.dir, '..', 'fixtures');

export interface FixtureCase {
  readonly name: string;
  readonly dir: string;
  readonly inputs: FixtureInputs;
  readonly scalars: Readonly<Record<string, number>>;
  readonly expected: SafetensorsReader;
}

export interface FixtureInputs {
  input_ids: number[][];
  labels: number[][];
  packed: { input_ids: number[]; cu_seqlens: number[]; labels: number[] };
  generate: { prompt: number[]; max_new_tokens: number };
  padded_generate?: { input_ids: number[][]; attention_mask: number[][]; max_new_tokens: number };
  /** Pre-shifted labels (NeMo's convention) for the MTP loss. */
  mtp?: { input_ids: number[][]; labels: number[][]; packed: { input_ids: number[]; cu_seqlens: number[]; labels: number[] } };
}

/** The MTP block's scalars (manifest blocks.mtp.scalars / packed_scalars). */
export interface MtpScalars {
  num_label_tokens: number;
  main_loss: number;
  depth_loss: number[];
  mtp_loss: number;
  total_loss: number;
}

/** The case's MTP scalars for the main batch and the packed row, or null without an MTP block. */
export async function mtpScalars(fixture: FixtureCase): Promise<{ main: MtpScalars; packed: MtpScalars } | null> {
  const manifest = (await Bun.file(join(fixture.dir, 'manifest.json')).json()) as { blocks?: { mtp?: { scalars: MtpScalars; packed_scalars: MtpScalars } } };
  const block = manifest.blocks?.mtp;
  return block ? { main: block.scalars, packed: block.packed_scalars } : null;
}

export async function fixtureNames(): Promise<string[]> {
  const index = (await Bun.file(join(FIXTURES_DIR, 'index.json')).json()) as { case: string }[];
  return index.map((c) => c.case);
}

export async function openFixture(name: string): Promise<FixtureCase> {
  const dir = join(FIXTURES_DIR, name);
  const manifest = (await Bun.file(join(dir, 'manifest.json')).json()) as { scalars: Record<string, number> };
  return {
    name,
    dir,
    inputs: (await Bun.file(join(dir, 'inputs.json')).json()) as FixtureInputs,
    scalars: manifest.scalars,
    expected: await SafetensorsReader.open(join(dir, 'expected.safetensors')),
  };
}

/** Host f32 values of an expected array. */
export async function expectedArray(fixture: FixtureCase, name: string): Promise<Float32Array> {
  const t = await fixture.expected.readHost(name);
  return Float32Array.from(t.data as ArrayLike<number>);
}

/** Host values of an expected int32 array. */
export async function expectedInts(fixture: FixtureCase, name: string): Promise<Int32Array> {
  const t = await fixture.expected.readHost(name);
  return Int32Array.from(t.data as ArrayLike<number>);
}

/** max |got − want| / max |want| (NaN anywhere in got counts as infinitely wrong). */
export function relDiff(got: ArrayLike<number>, want: ArrayLike<number>, include?: (i: number) => boolean): number {
  expect(got.length).toBe(want.length);
  let worst = 0;
  let scale = 0;
  for (let i = 0; i < want.length; i++) {
    if (include && !include(i)) continue;
    const d = Math.abs(got[i]! - want[i]!);
    worst = Number.isNaN(d) ? Infinity : Math.max(worst, d);
    scale = Math.max(scale, Math.abs(want[i]!));
  }
  return worst / scale;
}

/** Asserts the README's tolerance (1e-4 relative to the array's max) and returns the error. */
export function expectRel(what: string, got: ArrayLike<number>, want: ArrayLike<number>, include?: (i: number) => boolean): number {
  const rel = relDiff(got, want, include);
  expect({ what, rel, ok: rel <= 1e-4 }).toEqual({ what, rel, ok: true });
  return rel;
}

export function expectLoss(what: string, got: number, want: number): number {
  const diff = Math.abs(got - want);
  expect({ what, got, want, ok: diff <= 1e-4 }).toEqual({ what, got, want, ok: true });
  return diff;
}
