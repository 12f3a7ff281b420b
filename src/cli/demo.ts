/**
 * The main job until generation lands: load the `dense_f32` golden fixture with fromPretrained, run
 * a forward pass on its inputs, and print the loss against the fixture's and the prefill speed.
 */
import { join } from 'node:path';
import { noGrad, type Device } from '@nemotron-ts/kernels';
import { NemotronHForCausalLM } from '../pretrained';
import { deviceReport } from './info';

const FIXTURE = join(import.meta.dir, '..', '..', 'test', 'fixtures', 'dense_f32');

export async function runDemo(device: Device): Promise<void> {
  const report = deviceReport(device);
  console.log(`device: ${device.kind === 'cpu' ? report.description : `${report.adapter} (${report.backend})`}`);
  const inputs = (await Bun.file(join(FIXTURE, 'inputs.json')).json()) as { input_ids: number[][]; labels: number[][] };
  const expected = ((await Bun.file(join(FIXTURE, 'manifest.json')).json()) as { scalars: { loss: number } }).scalars.loss;
  const model = await NemotronHForCausalLM.fromPretrained(FIXTURE, { device, localFilesOnly: true });
  const run = async () => {
    const t0 = performance.now();
    const { logits, loss } = noGrad(() => model.forward({ inputIds: inputs.input_ids, labels: inputs.labels }));
    const value = (await loss!.data())[0]!;
    logits.dispose();
    loss!.dispose();
    return { value, ms: performance.now() - t0 };
  };
  const first = await run(); // compiles the kernels
  const { ms } = await run();
  const tokens = inputs.input_ids.length * inputs.input_ids[0]!.length;
  console.log(`dense_f32 fixture (${model.config.pattern}, ${model.numParameters()} parameters): loss ${first.value.toFixed(6)}, expected ${expected.toFixed(6)}, |diff| ${Math.abs(first.value - expected).toExponential(2)}`);
  console.log(JSON.stringify({ bench: 'prefill', model: 'dense_f32', tokens, ms: +ms.toFixed(1), tokens_per_s: Math.round((tokens * 1000) / ms) }));
  model.dispose();
}
