/**
 * Acceptance: every golden fixture case, loaded with fromPretrained, on each test device (WebGPU and
 * the CPU backend). The main batch (logits, last hidden state, every block's output for row 0,
 * loss), the packed row (logits, last hidden state, loss), where present the left-padded batch's
 * prompt logits at real positions, and generation — greedy tokens identical, the logits of every
 * step within tolerance, for the case's prompt and for the padded batch — must match within the
 * README's tolerances. Decode steps clamp dt as prefill does, so where the fixture also records the
 * logits of a decode that skips the clamp (`gen_step_logits_decode_unclamped`), ours must not match
 * those. Cases with an MTP block also check `forwardMtp`: every depth's hidden states and targets,
 * row 0's depth logits, and the main, per-depth, MTP and total losses, for the batch and the packed
 * row (whose hidden states count only where a target exists: elsewhere they depend on the roll
 * across documents).
 */
import { describe, expect, test } from 'bun:test';
import { narrow, noGrad, tensor, tidy, type Tensor } from '@nemotron-ts/kernels';
import { deviceLabel, testDevices } from '@nemotron-ts/kernels/testing';
import { NemotronHForCausalLM, type MtpOutput } from '../src';
import { expectedArray, expectedInts, expectLoss, expectRel, fixtureNames, mtpScalars, openFixture, relDiff, type FixtureCase } from './support/fixtures';

const devices = await testDevices();
const names = await fixtureNames();
const mtpNames = (await Promise.all(names.map(async (name) => ((await openFixture(name)).inputs.mtp ? name : null)))).filter((n) => n !== null);

/** One summary line per case and device, for the report. */
function report(fields: Record<string, unknown>): void {
  console.log(JSON.stringify(fields, (_k, v: unknown) => (typeof v === 'number' ? Number(v.toPrecision(3)) : v)));
}

async function scalar(t: Tensor | null): Promise<number> {
  expect(t).not.toBeNull();
  return (await t!.data())[0]!;
}

for (const device of devices) {
  describe(`fixtures on ${deviceLabel(device)}`, () => {
    for (const name of names) {
      test(name, async () => {
        const fixture = await openFixture(name);
        const model = await NemotronHForCausalLM.fromPretrained(fixture.dir, { device, localFilesOnly: true });
        const { inputs } = fixture;
        const L = model.config.numHiddenLayers;
        const row: Record<string, unknown> = { case: name, device: deviceLabel(device) };
        try {
          // Main batch.
          const main = noGrad(() => model.forward({ inputIds: inputs.input_ids, labels: inputs.labels, outputHiddenStates: true }));
          const hidden = main.hiddenStates!;
          expect(hidden.length).toBe(L + 1);
          row.logits = expectRel('logits', await main.logits.data(), await expectedArray(fixture, 'logits'));
          row.last_hidden = expectRel('last_hidden', await hidden[L]!.data(), await expectedArray(fixture, 'last_hidden'));
          row.loss = expectLoss('loss', await scalar(main.loss), fixture.scalars.loss!);

          // Every block's output, row 0, from the blocks themselves (HF's hidden states lack the last
          // block's raw output), and the forward's hidden states agree with them.
          const T = inputs.input_ids[0]!.length;
          const H = model.config.hiddenSize;
          const layerOutputs = await expectedArray(fixture, 'layer_outputs_row0');
          const blockOutputs = noGrad(() =>
            tidy(() => {
              let h = model.model.embeddings.forward(tensor(Int32Array.from(inputs.input_ids[0]!), [1, T], { device }));
              const outs: Tensor[] = [];
              for (const layer of model.model.layers) outs.push((h = layer.forward(h)));
              return outs;
            }),
          );
          let worstLayer = 0;
          for (let i = 0; i < L; i++) {
            const want = layerOutputs.subarray(i * T * H, (i + 1) * T * H);
            worstLayer = Math.max(worstLayer, expectRel(`layer_outputs_row0[${i}]`, await blockOutputs[i]!.data(), want));
            if (i < L - 1) expectRel(`hiddenStates[${i + 1}] row 0`, (await hidden[i + 1]!.data()).subarray(0, T * H), want);
          }
          row.layer_outputs_row0 = worstLayer;
          for (const t of blockOutputs) t.dispose();
          disposeOutputs(main);

          // The packed row: documents isolated.
          const packed = noGrad(() =>
            model.forward({
              inputIds: [inputs.packed.input_ids],
              cuSeqlens: inputs.packed.cu_seqlens,
              labels: [inputs.packed.labels],
              outputHiddenStates: true,
            }),
          );
          row.packed_logits = expectRel('packed_logits', await packed.logits.data(), await expectedArray(fixture, 'packed_logits'));
          row.packed_last_hidden = expectRel(
            'packed_last_hidden',
            await packed.hiddenStates!.at(-1)!.data(),
            await expectedArray(fixture, 'packed_last_hidden'),
          );
          row.packed_loss = expectLoss('packed_loss', await scalar(packed.loss), fixture.scalars.packed_loss!);
          disposeOutputs(packed);

          // The left-padded batch: prompt logits at real positions.
          const padded = inputs.padded_generate;
          if (padded) {
            const out = noGrad(() => model.forward({ inputIds: padded.input_ids, attentionMask: padded.attention_mask }));
            const V = model.config.vocabSize;
            const mask = padded.attention_mask.flat();
            row.padded_prompt_logits = expectRel(
              'padded/prompt_logits',
              await out.logits.data(),
              await expectedArray(fixture, 'padded/prompt_logits'),
              (i) => mask[Math.floor(i / V)] === 1,
            );
            disposeOutputs(out);
          }
          // Greedy generation of the case's prompt (EOS does not stop it).
          const gen = inputs.generate;
          const result = await model.generate({ inputIds: [gen.prompt], maxNewTokens: gen.max_new_tokens, eosTokenId: null, outputStepLogits: true });
          expect(result.tokens[0]).toEqual(Array.from(await expectedInts(fixture, 'gen_tokens')));
          const stepLogits = result.stepLogits![0]!;
          row.gen_step_logits = expectRel('gen_step_logits', stepLogits, await expectedArray(fixture, 'gen_step_logits'));
          if (fixture.expected.has('gen_step_logits_decode_unclamped')) {
            const unclamped = relDiff(stepLogits, await expectedArray(fixture, 'gen_step_logits_decode_unclamped'));
            expect({ what: 'decode without the dt clamp', rel: unclamped, differs: unclamped > 1e-4 }).toEqual({
              what: 'decode without the dt clamp',
              rel: unclamped,
              differs: true,
            });
          }

          // The padded batch generates what each prompt alone would.
          if (padded) {
            const out = await model.generate({
              inputIds: padded.input_ids,
              attentionMask: padded.attention_mask,
              maxNewTokens: padded.max_new_tokens,
              eosTokenId: null,
              outputStepLogits: true,
            });
            expect(out.tokens.flat()).toEqual(Array.from(await expectedInts(fixture, 'padded/gen_tokens')));
            const all = new Float32Array(out.stepLogits!.reduce((n, r) => n + r.length, 0));
            out.stepLogits!.reduce((at, r) => (all.set(r, at), at + r.length), 0);
            row.padded_gen_step_logits = expectRel('padded/gen_step_logits', all, await expectedArray(fixture, 'padded/gen_step_logits'));
          }
          report(row);
        } finally {
          model.dispose();
        }
      });
    }
    for (const name of mtpNames) {
      test(`${name}: multi-token prediction (mtp block)`, async () => {
        const fixture = await openFixture(name);
        const model = await NemotronHForCausalLM.fromPretrained(fixture.dir, { device, localFilesOnly: true });
        try {
          const row = { case: name, device: deviceLabel(device), mtp: await checkMtp(fixture, model) };
          report(row);
        } finally {
          model.dispose();
        }
      });
    }
  });
}

function disposeOutputs(out: { logits: Tensor; loss: Tensor | null; hiddenStates: Tensor[] | null }): void {
  out.logits.dispose();
  out.loss?.dispose();
  for (const t of out.hiddenStates ?? []) t.dispose();
}

/** forwardMtp on the case's MTP inputs (batch, then packed row) against the fixture; returns the worst errors. */
async function checkMtp(fixture: FixtureCase, model: NemotronHForCausalLM): Promise<Record<string, number>> {
  const mtp = fixture.inputs.mtp!;
  const scalars = (await mtpScalars(fixture))!;
  const { hiddenSize: H, vocabSize: V } = model.config;
  const errors: Record<string, number> = {};
  const losses = async (what: string, out: MtpOutput, want: (typeof scalars)['main']) => {
    expect(out.labelCount).toBe(want.num_label_tokens);
    let worst = expectLoss(`${what} main_loss`, (await out.mainLoss.data())[0]!, want.main_loss);
    for (const [k, l] of out.depthLosses.entries()) worst = Math.max(worst, expectLoss(`${what} depth_loss[${k}]`, (await l.data())[0]!, want.depth_loss[k]!));
    worst = Math.max(worst, expectLoss(`${what} mtp_loss`, (await out.mtpLoss.data())[0]!, want.mtp_loss));
    return Math.max(worst, expectLoss(`${what} total_loss`, (await out.loss.data())[0]!, want.total_loss));
  };

  const out = noGrad(() => model.forwardMtp({ inputIds: mtp.input_ids, labels: mtp.labels }));
  const D = out.depthHiddenStates.length;
  const [B, T] = [mtp.input_ids.length, mtp.input_ids[0]!.length];
  expect(out.depthTargets.flat(2)).toEqual(Array.from(await expectedInts(fixture, 'mtp/targets')));
  const hidden = await expectedArray(fixture, 'mtp/hidden');
  const logitsRow0 = await expectedArray(fixture, 'mtp/logits_row0');
  errors.hidden = 0;
  errors.logits_row0 = 0;
  for (let k = 0; k < D; k++) {
    const got = (await out.depthHiddenStates[k]!.data()) as Float32Array;
    errors.hidden = Math.max(errors.hidden, expectRel(`mtp/hidden[${k}]`, got, hidden.subarray(k * B * T * H, (k + 1) * B * T * H)));
    const row0 = (await noGrad(() => model.lmHead.forward(narrow(out.depthHiddenStates[k]!, 0, 0, 1))).data()) as Float32Array;
    errors.logits_row0 = Math.max(errors.logits_row0, expectRel(`mtp/logits_row0[${k}]`, row0, logitsRow0.subarray(k * T * V, (k + 1) * T * V)));
  }
  errors.losses = await losses('mtp', out, scalars.main);
  disposeMtp(out);

  const p = mtp.packed;
  const packed = noGrad(() => model.forwardMtp({ inputIds: [p.input_ids], labels: [p.labels], cuSeqlens: p.cu_seqlens }));
  const targets = await expectedInts(fixture, 'mtp/packed_targets');
  expect(packed.depthTargets.flat(2)).toEqual(Array.from(targets));
  const packedHidden = await expectedArray(fixture, 'mtp/packed_hidden');
  const L = p.input_ids.length;
  errors.packed_hidden = 0;
  for (let k = 0; k < D; k++) {
    const got = (await packed.depthHiddenStates[k]!.data()) as Float32Array;
    const counted = (i: number) => targets[k * L + Math.floor(i / H)] !== -100;
    errors.packed_hidden = Math.max(
      errors.packed_hidden,
      expectRel(`mtp/packed_hidden[${k}]`, got, packedHidden.subarray(k * L * H, (k + 1) * L * H), counted),
    );
  }
  errors.packed_losses = await losses('mtp packed', packed, scalars.packed);
  disposeMtp(packed);
  return errors;
}

function disposeMtp(out: MtpOutput): void {
  for (const t of [out.logits, out.loss, out.mainLoss, out.mtpLoss, ...out.depthHiddenStates, ...out.depthLosses]) t.dispose();
}
