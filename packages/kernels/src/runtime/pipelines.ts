/**
 * Compute pipelines cached by WGSL source. Dawn does not dedupe identical pipelines and llvmpipe
 * compiles real code at the first dispatch, so every distinct source is compiled exactly once.
 *
 * Layouts are explicit, read off the source's `@group(0)` declarations, so the parameter uniform
 * (binding 0) can take a dynamic offset: a bind group then depends only on the buffers bound, and
 * the batch reuses it across dispatches instead of creating one per dispatch. Uniforms at other
 * bindings are tensors bound like storage buffers (no dynamic offset).
 */

export interface CachedPipeline {
  readonly name: string;
  readonly pipeline: GPUComputePipeline;
  readonly layout: GPUBindGroupLayout;
  /** Small integer identity, for bind-group cache keys. */
  readonly id: number;
}

/** The bind group layout entry a `@group(0)` declaration needs. */
function layoutEntry(binding: number, space: string | undefined, type: string, source: string): GPUBindGroupLayoutEntry {
  const visibility = GPUShaderStage.COMPUTE;
  const addr = (space ?? '').replace(/\s+/g, '');
  // Binding 0 is the parameter block, at a dynamic offset of the batch's arena; other uniforms are tensors.
  if (addr === 'uniform') return { binding, visibility, buffer: { type: 'uniform', hasDynamicOffset: binding === 0 } };
  if (addr === 'storage' || addr === 'storage,read') return { binding, visibility, buffer: { type: 'read-only-storage' } };
  if (addr === 'storage,read_write') return { binding, visibility, buffer: { type: 'storage' } };
  const texture = /^texture_2d<(f32|u32|i32)>$/.exec(type.replace(/\s+/g, ''));
  if (!addr && texture) {
    const sampleType = texture[1] === 'f32' ? 'unfilterable-float' : texture[1] === 'u32' ? 'uint' : 'sint';
    return { binding, visibility, texture: { sampleType, viewDimension: '2d' } };
  }
  const storageTexture = /^texture_storage_2d<(\w+),read>$/.exec(type.replace(/\s+/g, ''));
  if (!addr && storageTexture)
    return { binding, visibility, storageTexture: { access: 'read-only', format: storageTexture[1] as GPUTextureFormat, viewDimension: '2d' } };
  throw new Error(`unsupported kernel binding ${binding} (var<${space ?? ''}> ${type}) in:\n${source.slice(0, 400)}`);
}

const DECLARATION = /@group\(0\)\s*@binding\((\d+)\)\s*var(?:<([^>]*)>)?\s+\w+\s*:\s*([^;]+);/g;

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
    const entries = [...source.matchAll(DECLARATION)].map((m) => layoutEntry(Number(m[1]), m[2], m[3]!, source));
    this.device.pushErrorScope('validation');
    const layout = this.device.createBindGroupLayout({ entries, label: name });
    const module = this.device.createShaderModule({ code: source, label: name });
    const pipeline = this.device.createComputePipeline({
      layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout], label: name }),
      compute: { module, entryPoint: 'main' },
      label: name,
    });
    void this.device.popErrorScope().then((err) => {
      if (err) this.onError(`kernel '${name}' failed to build: ${err.message}\n--- WGSL ---\n${numbered(source)}`);
    });
    const entry: CachedPipeline = { name, pipeline, layout, id: this.cache.size };
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
