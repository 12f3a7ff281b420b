/**
 * The main job (`npm start`): generation on the default device with the tiny Nemotron-H shipped in
 * models/tiny-nemotron (trained on the project's docs by `bun run make-tiny`): the prompt goes
 * through fromPretrained's model and tokenizer, the generated text streams as it is produced, then
 * the prompt and generation speed and the device.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { loadTokenizer } from '@nemotron-ts/hub';
import type { Device } from '@nemotron-ts/kernels';
import { NemotronHForCausalLM } from '../pretrained';
import { TINY_TRAINED_DIR } from '../tiny-model';
import { deviceReport } from './info';

const PROMPT = 'The trainer ';

export async function runDemo(device: Device, folder: string = TINY_TRAINED_DIR): Promise<void> {
  const report = deviceReport(device);
  const deviceName = device.kind === 'cpu' ? report.description : `${report.adapter} (${report.backend})`;
  console.log(`device: ${deviceName}`);
  if (
    !(await stat(join(folder, 'model.safetensors')).then(
      (s) => s.isFile(),
      () => false,
    ))
  ) {
    throw new Error(`${folder} holds no model.safetensors: rebuild the demo model with \`bun run make-tiny\``);
  }
  const model = (await NemotronHForCausalLM.fromPretrained(folder, { device, localFilesOnly: true })).requiresGrad_(false);
  const tokenizer = await loadTokenizer(folder);
  try {
    console.log(`model: ${folder} (${model.config.pattern} + MTP, ${model.numParameters()} parameters, trained on the project's docs, byte-level tokenizer)`);
    const inputIds = [tokenizer.encode(PROMPT)];
    // A few tokens first: compiles the kernels (seconds on a cold llvmpipe), so the speeds below are the steady ones.
    await model.generate({ inputIds, maxNewTokens: 4 });
    process.stdout.write(`\n${PROMPT}`);
    // A cool temperature: the tiny model's second guesses are mostly misspellings.
    const result = await model.generate({
      inputIds,
      tokenizer,
      doSample: true,
      temperature: 0.5,
      topK: 8,
      maxNewTokens: 200,
      seed: 1,
      onToken: (e) => process.stdout.write(e.text![0]!),
    });
    const s = result.stats;
    console.log(
      `\n\nprompt ${s.promptTokens} tokens: ${s.promptTokensPerS.toFixed(0)} tokens/s · generation ${s.steps} tokens: ${s.decodeTokensPerS.toFixed(0)} tokens/s · device: ${deviceName}`,
    );
    console.log(
      JSON.stringify({
        bench: 'generate',
        model: 'tiny-nemotron',
        prompt_tokens: s.promptTokens,
        new_tokens: s.steps,
        prompt_tokens_per_s: Math.round(s.promptTokensPerS),
        decode_tokens_per_s: Math.round(s.decodeTokensPerS),
        device: deviceName,
      }),
    );
  } finally {
    model.dispose();
  }
}
