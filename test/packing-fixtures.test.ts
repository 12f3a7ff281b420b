/**
 * Packing as NeMo does it, against every fixture's packed row (`packed_logits`, `packed_last_hidden`,
 * `packed_loss`): the THD layout ([T] ids and labels, as a list or a tensor); several packed rows in
 * one batch (per-row cu_seqlens as lists, as a [B, K] tensor padded with NeMo's -1000 sentinel, or
 * seq_idx); and cu_seqlens_padded, where each document is followed by padding positions that must
 * change nothing at the real ones.
 */
import { describe, expect, test } from 'bun:test';
import { noGrad, tensor, type Tensor } from '@nemotron-ts/kernels';
import { testDevices } from '@nemotron-ts/kernels/testing';
import { NemotronHForCausalLM } from '../src';
import { expectedArray, expectLoss, expectRel, fixtureNames, openFixture } from './support/fixtures';

const devices = await testDevices();
const names = await fixtureNames();
const SENTINEL = -1000;

async function values(t: Tensor | null): Promise<Float32Array> {
  expect(t).not.toBeNull();
  return (await t!.toFloat32()) as Float32Array;
}

/** Rows of `width` floats of `flat`, picked by position. */
function gather(flat: Float32Array, width: number, positions: readonly number[]): Float32Array {
  const out = new Float32Array(positions.length * width);
  positions.forEach((p, i) => out.set(flat.subarray(p * width, (p + 1) * width), i * width));
  return out;
}

for (const device of devices) {
  describe(`NeMo packing on ${device.kind}`, () => {
    // The CPU runs every case and layout. WebGPU (slow on the CI's software adapter) runs one case
    // (hybrid: Mamba and attention) through the device-side paths: tensors in, seq_idx on the device.
    const full = device.kind === 'cpu';
    for (const name of full ? names : names.filter((n) => n === 'hybrid_bf16')) {
      test(name, async () => {
        const fixture = await openFixture(name);
        using model = await NemotronHForCausalLM.fromPretrained(fixture.dir, { device, localFilesOnly: true });
        const { input_ids: ids, cu_seqlens: cu, labels } = fixture.inputs.packed;
        const T = ids.length;
        const V = model.config.vocabSize;
        const H = model.config.hiddenSize;
        const wantLogits = await expectedArray(fixture, 'packed_logits');
        const wantHidden = await expectedArray(fixture, 'packed_last_hidden');
        const docs = cu.slice(0, -1).map((start, k) => Array.from({ length: cu[k + 1]! - start }, (_, i) => start + i));

        // THD: [T] ids and labels in, [T, V] logits out.
        if (full) {
          using out = noGrad(() => model.forward({ inputIds: ids, cuSeqlens: cu, labels, outputHiddenStates: true }));
          expect(out.logits.shape).toEqual([T, V]);
          expectRel('THD logits', await values(out.logits), wantLogits);
          expectRel('THD last hidden', await values(out.hiddenStates!.at(-1)!), wantHidden);
          expectLoss('THD loss', (await values(out.loss))[0]!, fixture.scalars.packed_loss!);
        }
        {
          using idsTensor = tensor(Int32Array.from(ids), [T], { device });
          using cuTensor = tensor(Int32Array.from(cu), [cu.length], { device });
          using fromTensors = noGrad(() => model.forward({ inputIds: idsTensor, cuSeqlens: cuTensor }));
          expectRel('THD logits (tensors)', await values(fromTensors.logits), wantLogits);
        }

        // Two packed rows: the fixture's, and its documents in reverse order.
        const reversed = [...docs].reverse();
        const order = reversed.flat();
        const cuReversed = [0];
        for (const d of reversed) cuReversed.push(cuReversed.at(-1)! + d.length);
        // HF labels: a document's first label is never a target of the previous document.
        const labelsReversed = reversed.flatMap((d) => d.map((p, i) => (i === 0 ? -100 : labels[p]!)));
        const batchIds = [ids, order.map((p) => ids[p]!)];
        const wantReversed = gather(wantLogits, V, order);
        const check = async (what: string, out: { logits: Tensor }) => {
          const got = await values(out.logits);
          expectRel(`${what} row 0`, got.subarray(0, T * V), wantLogits);
          expectRel(`${what} row 1`, got.subarray(T * V), wantReversed);
        };
        if (full) {
          using out = noGrad(() => model.forward({ inputIds: batchIds, cuSeqlens: [cu, cuReversed], labels: [labels, labelsReversed] }));
          await check('per-row cuSeqlens', out);
          // The same targets in both rows as in the fixture's row: the same mean.
          expectLoss('two packed rows loss', (await values(out.loss))[0]!, fixture.scalars.packed_loss!);
          const seqIdx = [docs, reversed].map((row) => row.flatMap((d, k) => d.map(() => k)));
          using fromSeqIdx = noGrad(() => model.forward({ inputIds: batchIds, seqIdx }));
          await check('seqIdx', fromSeqIdx);
        }
        {
          // A [B, K] tensor right-padded with the sentinel (row 1 one entry longer than row 0).
          const width = cu.length + 1;
          const padded = [...cu, SENTINEL, ...cuReversed].concat(Array.from({ length: 2 * width - cu.length - 1 - cuReversed.length }, () => SENTINEL));
          using cuTensor = tensor(Int32Array.from(padded), [2, width], { device });
          using fromTensor = noGrad(() => model.forward({ inputIds: batchIds, cuSeqlens: cuTensor }));
          await check('[B, K] cuSeqlens tensor with sentinel', fromTensor);
        }
        if (!full) return;

        // cu_seqlens_padded: document k followed by 2 + k % 2 padding positions (token 0); row 1 holds
        // document 0 alone, then padding to the row's end (NeMo's sentinel pads its short lists).
        const layout: number[] = [];
        const cuPadded = [0];
        docs.forEach((d, k) => {
          for (const p of d) layout.push(p);
          for (let i = 0; i < 2 + (k % 2); i++) layout.push(-1);
          cuPadded.push(layout.length);
        });
        const L = layout.length;
        const rowIds = [layout.map((p) => (p < 0 ? 0 : ids[p]!)), [...docs[0]!.map((p) => ids[p]!), ...Array.from({ length: L - docs[0]!.length }, () => 0)]];
        const fill = (list: number[]) => [...list, ...Array.from({ length: cu.length - list.length }, () => SENTINEL)];
        {
          using out = noGrad(() =>
            model.forward({
              inputIds: rowIds,
              cuSeqlens: [cu, fill([0, docs[0]!.length])],
              cuSeqlensPadded: [cuPadded, fill([0, L])],
              outputHiddenStates: true,
            }),
          );
          const got = await values(out.logits);
          const real = layout.map((p, i) => [p, i] as const).filter(([p]) => p >= 0);
          expectRel(
            'cuSeqlensPadded row 0',
            gather(
              got,
              V,
              real.map(([, i]) => i),
            ),
            gather(
              wantLogits,
              V,
              real.map(([p]) => p),
            ),
          );
          expectRel('cuSeqlensPadded row 1', got.subarray(L * V, (L + docs[0]!.length) * V), gather(wantLogits, V, docs[0]!));
          const hidden = await values(out.hiddenStates!.at(-1)!);
          expectRel(
            'cuSeqlensPadded hidden row 0',
            gather(
              hidden,
              H,
              real.map(([, i]) => i),
            ),
            gather(
              wantHidden,
              H,
              real.map(([p]) => p),
            ),
          );
          for (const v of got) expect(Number.isFinite(v)).toBe(true);
        }
      });
    }
  });
}

describe('packing input errors', () => {
  test('name the field, the row and the problem', async () => {
    const fixture = await openFixture(names[0]!);
    using model = await NemotronHForCausalLM.fromPretrained(fixture.dir, { device: devices[0]!, localFilesOnly: true });
    const ids = [
      [1, 2, 3, 4],
      [5, 6, 7, 8],
    ];
    const run = (inputs: Parameters<typeof model.forward>[0]) => () => noGrad(() => model.forward(inputs)).dispose();
    expect(run({ inputIds: ids, cuSeqlens: [0, 2, 4] })).toThrow(/one packed row, but the batch has 2 rows/);
    expect(
      run({
        inputIds: ids,
        cuSeqlens: [
          [0, 4],
          [0, 3, -1000],
        ],
      }),
    ).toThrow(/cuSeqlens\[1\] must end at the row length 4, got 3/);
    expect(run({ inputIds: ids, cuSeqlens: [[0, 4]] })).toThrow(/1 rows of boundaries, the batch 2 rows/);
    expect(
      run({
        inputIds: ids,
        cuSeqlens: [
          [0, 4],
          [0, 4],
        ],
        seqIdx: [
          [0, 0, 0, 0],
          [0, 0, 1, 1],
        ],
      }),
    ).toThrow(/cuSeqlens or seqIdx, not both/);
    expect(
      run({
        inputIds: ids,
        cuSeqlens: [
          [0, 3],
          [0, 4],
        ],
        cuSeqlensPadded: [
          [0, 2],
          [0, 4],
        ],
      }),
    ).toThrow(/cuSeqlensPadded\[0\] must end at the row length 4/);
    expect(
      run({
        inputIds: ids,
        cuSeqlens: [
          [0, 3, 4],
          [0, 4, -1000],
        ],
        cuSeqlensPadded: [
          [0, 2, 4],
          [0, 4, -1000],
        ],
      }),
    ).toThrow(/document 0 has 3 tokens, more than its 2 padded positions/);
    expect(
      run({
        inputIds: ids,
        cuSeqlensPadded: [
          [0, 4],
          [0, 4],
        ],
      }),
    ).toThrow(/cuSeqlensPadded needs cuSeqlens/);
    expect(
      run({
        inputIds: ids,
        seqIdx: [
          [0, 0, 0],
          [0, 0, 1],
        ],
      }),
    ).toThrow(/seqIdx \[2, 3\] does not match the batch \[2, 4\]/);
    expect(run({ inputIds: [1, 2, 3], labels: [1, 2] })).toThrow(/labels \[1, 2\] does not match the batch \[1, 3\]/);
  });
});
