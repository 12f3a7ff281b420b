/**
 * The main job (`npm start`): generation on the default device with a tiny Nemotron-H the project
 * builds itself (src/tiny-model.ts, cached in .cache/tiny-nemotron): the prompt goes through
 * fromPretrained's model and tokenizer, the generated text streams as it is produced, then the
 * prompt and generation speed.
 */
import { loadTokenizer } from '@nemotron-ts/hub';
import type { Device } from '@nemotron-ts/kernels';
import { NemotronHForCausalLM } from '../pretrained';
import { ensureTinyModel } from '../tiny-model';
import { deviceReport } from './info';

const PROMPT = 'Nemotron-H ';

export async function runDemo(device: Device): Promise<void> {
  const report = deviceReport(device);
  console.log(`device: ${device.kind === 'cpu' ? report.description : `${report.adapter} (${report.backend})`}`);
  const folder = await ensureTinyModel();
  const model = (await NemotronHForCausalLM.fromPretrained(folder, { device, localFilesOnly: true })).requiresGrad_(false);
  const tokenizer = await loadTokenizer(folder);
  try {
    console.log(`model: ${folder} (${model.config.pattern}, ${model.numParameters()} parameters, byte-level tokenizer)`);
    const inputIds = [tokenizer.encode(PROMPT)];
    // A few tokens first: compiles the kernels (seconds on a cold llvmpipe), so the speeds below are the steady ones.
    await model.generate({ inputIds, maxNewTokens: 4 });
    process.stdout.write(`\n${PROMPT}`);
    const result = await model.generate({ inputIds, tokenizer, seed: 1, onToken: (e) => process.stdout.write(e.text![0]!) });
    const s = result.stats;
    console.log(`\n\nprompt ${s.promptTokens} tokens: ${s.promptTokensPerS.toFixed(0)} tokens/s · generation ${s.steps} tokens: ${s.decodeTokensPerS.toFixed(0)} tokens/s`);
    console.log(JSON.stringify({ bench: 'generate', model: 'tiny-nemotron', prompt_tokens: s.promptTokens, new_tokens: s.steps, prompt_tokens_per_s: Math.round(s.promptTokensPerS), decode_tokens_per_s: Math.round(s.decodeTokensPerS) }));
  } finally {
    model.dispose();
  }
}
