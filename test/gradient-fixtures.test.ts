/**
 * Acceptance for training: the gradients of every fixture case's main loss (HF convention) with
 * respect to every checkpoint tensor, on each test device, against the fixture (README tolerances):
 * full gradients where stored (`grad/<name>`, max |diff| ≤ 1e-3 · max |expected|), L2 norms
 * (relative ≤ 1e-3) and sampled values (|diff| ≤ 1e-3 · the tensor's L2 norm) for the rest, and the
 * packed row's loss gradient norms. Cases with an MTP block check the same for d(total_loss) of
 * `forwardMtp` (backbone and mtp.* tensors). Gradients are mapped to the checkpoint's names
 * (per-expert keys sliced from the stacked experts) by the export plan the checkpoint writer uses.
 */
import { describe, expect, test } from 'bun:test';
import { planCheckpointExport } from '@nemotron-ts/core';
import { backward, noGrad, narrow, reshape, tidy } from '@nemotron-ts/kernels';
import { deviceLabel, testDevices } from '@nemotron-ts/kernels/testing';
import { NemotronHForCausalLM, type MtpInputs } from '../src';
import { expectedArray, fixtureNames, openFixture, type FixtureCase } from './support/fixtures';

const devices = await testDevices();
const names = await fixtureNames();

interface ParamGradient {
  shape: number[];
  l2: number;
  sample_flat_index: number[];
  sample_value: number[];
  packed_l2: number;
}

interface GradientManifest {
  gradients: { params: Record<string, ParamGradient> };
  blocks?: { mtp?: { gradients: { params: Record<string, ParamGradient> } } };
}

async function gradientManifest(fixture: FixtureCase): Promise<GradientManifest> {
  return (await Bun.file(`${fixture.dir}/manifest.json`).json()) as GradientManifest;
}

/** Every checkpoint tensor's gradient, host f32, under its checkpoint name (zeros where none flowed). */
async function checkpointGradients(model: NemotronHForCausalLM): Promise<Map<string, Float32Array>> {
  const named = model.namedTensors();
  const plan = planCheckpointExport(
    named.map((t) => ({ name: t.name, shape: t.tensor.shape })),
    'hf',
  );
  const out = new Map<string, Float32Array>();
  for (const entry of plan) {
    const source = model.getTensor(entry.source);
    const size = entry.shape.reduce((a, b) => a * b, 1);
    if (!source.grad) {
      out.set(entry.key, new Float32Array(size));
      continue;
    }
    const grad = source.grad;
    const slice = noGrad(() => tidy(() => reshape(entry.expert === undefined ? grad : narrow(grad, 0, entry.expert, 1), [size])));
    out.set(entry.key, Float32Array.from((await slice.data()) as Float32Array));
    slice.dispose();
  }
  return out;
}

function l2(values: Float32Array): number {
  return Math.sqrt(values.reduce((s, v) => s + v * v, 0));
}

async function lossGradients(model: NemotronHForCausalLM, inputs: Parameters<NemotronHForCausalLM['forward']>[0]): Promise<Map<string, Float32Array>> {
  model.zeroGrad();
  const { logits, loss } = model.forward(inputs);
  logits.dispose();
  backward(loss!);
  loss!.dispose();
  return checkpointGradients(model);
}

async function mtpLossGradients(model: NemotronHForCausalLM, inputs: MtpInputs): Promise<Map<string, Float32Array>> {
  model.zeroGrad();
  const out = model.forwardMtp(inputs);
  backward(out.loss);
  for (const t of [out.logits, out.loss, out.mainLoss, out.mtpLoss, ...out.depthHiddenStates, ...out.depthLosses]) t.dispose();
  return checkpointGradients(model);
}

/**
 * Checks `got` against the manifest's entries (norms, samples, and full arrays stored under
 * `${fullPrefix}<name>`); returns the worst norm and full-array errors.
 */
async function compareGradients(
  fixture: FixtureCase,
  got: Map<string, Float32Array>,
  want: Record<string, ParamGradient>,
  fullPrefix: string,
): Promise<{ norm: number; full: number }> {
  let norm = 0;
  let full = 0;
  for (const [key, w] of Object.entries(want)) {
    const g = got.get(key);
    expect({ key, present: g !== undefined }).toEqual({ key, present: true });
    const rel = Math.abs(l2(g!) - w.l2) / Math.max(w.l2, 1e-30);
    norm = Math.max(norm, rel);
    expect({ key, rel, ok: rel <= 1e-3 || w.l2 < 1e-12 }).toEqual({ key, rel, ok: true });
    w.sample_flat_index.forEach((at, i) => {
      const diff = Math.abs(g![at]! - w.sample_value[i]!);
      expect({ key, at, diff, ok: diff <= 1e-3 * w.l2 + 1e-12 }).toEqual({ key, at, diff, ok: true });
    });
    const name = `${fullPrefix}${key}`;
    if (fixture.expected.has(name)) {
      const expected = await expectedArray(fixture, name);
      let diff = 0;
      let scale = 0;
      expected.forEach((v, i) => {
        diff = Math.max(diff, Math.abs(g![i]! - v));
        scale = Math.max(scale, Math.abs(v));
      });
      const relFull = scale > 0 ? diff / scale : diff;
      full = Math.max(full, relFull);
      expect({ name, relFull, ok: relFull <= 1e-3 }).toEqual({ name, relFull, ok: true });
    }
  }
  return { norm, full };
}

/** The worst relative error of the gradient norms against `packed_l2`. */
function comparePackedNorms(got: Map<string, Float32Array>, want: Record<string, ParamGradient>): number {
  let worst = 0;
  for (const [key, w] of Object.entries(want)) {
    const rel = Math.abs(l2(got.get(key)!) - w.packed_l2) / Math.max(w.packed_l2, 1e-30);
    worst = Math.max(worst, rel);
    expect({ key, packed: true, rel, ok: rel <= 1e-3 || w.packed_l2 < 1e-12 }).toEqual({ key, packed: true, rel, ok: true });
  }
  return worst;
}

for (const device of devices) {
  describe(`fixture gradients on ${deviceLabel(device)}`, () => {
    for (const name of names) {
      test(name, async () => {
        const fixture = await openFixture(name);
        const model = await NemotronHForCausalLM.fromPretrained(fixture.dir, { device, dtype: 'f32', localFilesOnly: true });
        try {
          const manifest = await gradientManifest(fixture);
          const want = manifest.gradients.params;
          const { inputs } = fixture;
          const row: Record<string, unknown> = { case: name, device: deviceLabel(device) };
          // The main loss reaches no mtp.* tensor; every other checkpoint tensor has an entry.
          const got = await lossGradients(model, { inputIds: inputs.input_ids, labels: inputs.labels });
          const extra = [...got.keys()].filter((k) => !(k in want) && !k.endsWith('e_score_correction_bias') && !k.startsWith('mtp.'));
          expect(extra).toEqual([]);
          const main = await compareGradients(fixture, got, want, 'grad/');
          row.grad_l2_rel = main.norm;
          row.grad_full_rel = main.full;
          const p = inputs.packed;
          row.packed_grad_l2_rel = comparePackedNorms(
            await lossGradients(model, { inputIds: [p.input_ids], labels: [p.labels], cuSeqlens: p.cu_seqlens }),
            want,
          );

          const mtpWant = manifest.blocks?.mtp?.gradients.params;
          if (mtpWant && inputs.mtp) {
            const m = inputs.mtp;
            const mtp = await compareGradients(fixture, await mtpLossGradients(model, { inputIds: m.input_ids, labels: m.labels }), mtpWant, 'mtp/grad/');
            row.mtp_grad_l2_rel = mtp.norm;
            row.mtp_grad_full_rel = mtp.full;
            const mp = m.packed;
            row.mtp_packed_grad_l2_rel = comparePackedNorms(
              await mtpLossGradients(model, { inputIds: [mp.input_ids], labels: [mp.labels], cuSeqlens: mp.cu_seqlens }),
              mtpWant,
            );
          }
          console.log(JSON.stringify(row, (_k, v: unknown) => (typeof v === 'number' ? Number(v.toPrecision(3)) : v)));
        } finally {
          model.dispose();
        }
        // The run's --timeout governs (scripts/bootstrap.mjs: 300 s): the first case compiles every
        // backward kernel, which on a cold shader cache takes lavapipe ~2.4× as long as llvmpipe.
      });
    }
  });
}
