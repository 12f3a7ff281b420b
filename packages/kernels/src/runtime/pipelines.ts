/**
 * Compute pipelines cached by WGSL source. Dawn does not dedupe identical pipelines and llvmpipe
 * compiles real code at the first dispatch, so every distinct source is compiled exactly once.
 */

export interface CachedPipeline {
  readonly name: string;
  readonly pipeline: GPUComputePipeline;
  readonly layout: GPUBindGroupLayout;
}

export class PipelineCache {
  private readonly cache = new Map<string, CachedPipeline>();

  constructor(
    private readonly device: GPUDevice,
    /** Called with a message when a shader fails to compile (reported asynchronously by Dawn). */
    private readonly onError: (message: string) => void,
  ) {}

  get(name: string, source: string): CachedPipeline {
    const hit = this.cache.get(source);
    if (hit) return hit;
    this.device.pushErrorScope('validation');
    const module = this.device.createShaderModule({ code: source, label: name });
    const pipeline = this.device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' }, label: name });
    void this.device.popErrorScope().then((err) => {
      if (err) this.onError(`kernel '${name}' failed to build: ${err.message}\n--- WGSL ---\n${numbered(source)}`);
    });
    const entry: CachedPipeline = { name, pipeline, layout: pipeline.getBindGroupLayout(0) };
    this.cache.set(source, entry);
    return entry;
  }

  get size(): number {
    return this.cache.size;
  }
}

function numbered(source: string): string {
  return source
    .split('\n')
    .map((line, i) => `${String(i + 1).padStart(4)}| ${line}`)
    .join('\n');
}
