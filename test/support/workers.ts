/**
 * Support for the tests that run the model through Bun Workers against one device: the workers'
 * device, the tolerances that follow from it, and a fixture's model and one-device training step.
 */
import { type AdamW, backward, type Device } from '@nemotron-ts/kernels';
import { NemotronHForCausalLM } from '../../src';
import { type FixtureCase, openFixture } from './fixtures';

/** The workers' device: the CPU backend, or NEMOTRON_TEST_WORKER_DEVICE. */
export const WORKER_DEVICES = [process.env.NEMOTRON_TEST_WORKER_DEVICE ?? 'cpu'];

/** Workers on the host's backend (CPU) agree to rounding; on another backend, to the fixtures' tolerance. */
export const SAME_BACKEND = WORKER_DEVICES[0] === 'cpu';
export const LOGITS_TOL = SAME_BACKEND ? 1e-6 : 1e-4;
export const LOSS_TOL = SAME_BACKEND ? 1e-5 : 1e-4;

/** A golden fixture and its model, loaded onto `device`. */
export async function loadFixtureModel(name: string, device: Device): Promise<{ fixture: FixtureCase; model: NemotronHForCausalLM }> {
  const fixture = await openFixture(name);
  const model = await NemotronHForCausalLM.fromPretrained(fixture.dir, { device, localFilesOnly: true });
  return { fixture, model };
}

/** One AdamW step of `model` on `batch` on its own device; the loss before the step. */
export async function oneDeviceTrainStep(model: NemotronHForCausalLM, optimizer: AdamW, batch: { inputIds: number[][]; labels: number[][] }): Promise<number> {
  model.zeroGrad();
  const { loss } = model.forward(batch);
  const value = await loss!.item();
  backward(loss!);
  optimizer.step();
  return value;
}
