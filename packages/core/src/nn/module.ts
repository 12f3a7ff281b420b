/**
 * A small module system in the spirit of PyTorch's `nn.Module`: a tree of modules, each owning named
 * parameters (trainable tensors) and buffers (state that is saved but not trained), addressed by
 * dotted paths (`model.layers.0.mixer.in_proj.weight`).
 *
 * Tensors live in slots, not in fields: loading, casting and moving a module replace the tensor in a
 * slot (a bf16 copy has new storage), so subclasses expose them through getters that read the slot.
 * A module owns its tensors: `dispose()` releases them all.
 */
import { cast, empty, formatShape, isFloat, noGrad, shapesEqual, tensor, zeroGrad, type Device, type FloatDType, type Tensor } from '@nemotron-ts/kernels';

/** A trainable tensor: a leaf `Tensor` with `requiresGrad` set (unless frozen). */
export type Parameter = Tensor;

export type TensorKind = 'parameter' | 'buffer';

export interface TensorSlotOptions {
  /**
   * Keep this tensor in f32 whatever dtype the module is cast to (NeMo's fp32 parameters: Mamba's
   * A_log / dt_bias / D, the router's correction bias).
   */
  keepF32?: boolean;
}

/** One tensor of a module tree, as listed by {@link Module.namedTensors}. */
export interface NamedTensor {
  readonly name: string;
  readonly tensor: Tensor;
  readonly kind: TensorKind;
  readonly keepF32: boolean;
}

/** Where new tensors are created: dtype of floating tensors (keep-f32 ones excepted) and device. */
export interface Placement {
  dtype?: FloatDType;
  device?: Device;
}

export interface ShapeMismatch {
  readonly name: string;
  readonly expected: readonly number[];
  readonly actual: readonly number[];
}

/**
 * What a load (`loadStateDict`, or `loadCheckpoint` in the checkpoint's naming) found: names it
 * lacked, names it did not know, shape mismatches, and names skipped on purpose.
 */
export interface LoadReport {
  /** Names the model needs that the source lacks. */
  readonly missing: readonly string[];
  /** Names in the source that nothing in the model reads. */
  readonly unexpected: readonly string[];
  /** Names whose shape differs from what the model needs. */
  readonly mismatched: readonly ShapeMismatch[];
  /** Names skipped on purpose (`mtp.*` tensors for a model without an MTP head); none for a state dict. */
  readonly ignored: readonly string[];
}

/** How {@link formatLoadReport} labels the two shapes of a mismatch. */
export interface ShapeLabels {
  readonly expected: string;
  readonly actual: string;
}

export interface LoadOptions {
  /** Throw (before changing anything) when a name is missing or unexpected, or a shape mismatches. Default true. */
  strict?: boolean;
}

interface Slot {
  tensor: Tensor;
  readonly kind: TensorKind;
  readonly keepF32: boolean;
}

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$|^[0-9]+$/;

export class Module {
  private readonly slots = new Map<string, Slot>();
  private readonly children = new Map<string, Module>();
  private trainingMode = true;
  private disposed = false;

  /** True in training mode (the default), false after `eval()`. */
  get training(): boolean {
    return this.trainingMode;
  }

  /** Registers a parameter under `name`; the module takes ownership of `value`. */
  protected registerParameter(name: string, value: Tensor, options: TensorSlotOptions = {}): void {
    this.addSlot(name, value, 'parameter', options);
  }

  /** Registers a (persistent) buffer under `name`; the module takes ownership of `value`. */
  protected registerBuffer(name: string, value: Tensor, options: TensorSlotOptions = {}): void {
    this.addSlot(name, value, 'buffer', options);
  }

  /** Registers a child module under `name` and returns it. */
  protected registerModule<M extends Module>(name: string, module: M): M {
    this.checkNewName(name);
    this.children.set(name, module);
    return module;
  }

  /** {@link registerModule}, but first in the children's order (a replacement keeps its place). */
  protected registerModuleFirst<M extends Module>(name: string, module: M): M {
    this.checkNewName(name);
    const rest = [...this.children];
    this.children.clear();
    this.children.set(name, module);
    for (const [n, m] of rest) this.children.set(n, m);
    return module;
  }

  /** Removes the child module `name` and returns it (the caller owns it: it is not disposed). */
  protected unregisterModule(name: string): Module {
    const child = this.children.get(name);
    if (!child) throw new Error(`${this.constructor.name} has no child module '${name}'`);
    this.children.delete(name);
    return child;
  }

  /** The tensor in this module's own slot `name` (for subclasses' getters). */
  protected slotTensor(name: string): Tensor {
    if (this.disposed) throw new Error(`${this.constructor.name}: tensor '${name}' was read after dispose()`);
    const slot = this.slots.get(name);
    if (!slot) throw new Error(`${this.constructor.name} has no tensor '${name}'`);
    return slot.tensor;
  }

  /**
   * Allocates and registers a floating parameter of `shape` (f32 when keep-f32, else the placement's
   * dtype). Its contents are undefined until initialised or loaded.
   */
  protected createParameter(name: string, shape: readonly number[], placement: Placement, options: TensorSlotOptions = {}): void {
    this.checkNewName(name);
    this.registerParameter(name, allocate(shape, placement, options), options);
  }

  /** Allocates and registers a floating buffer of `shape` (contents undefined until initialised or loaded). */
  protected createBuffer(name: string, shape: readonly number[], placement: Placement, options: TensorSlotOptions = {}): void {
    this.checkNewName(name);
    this.registerBuffer(name, allocate(shape, placement, options), options);
  }

  private addSlot(name: string, value: Tensor, kind: TensorKind, options: TensorSlotOptions): void {
    this.checkNewName(name);
    if (options.keepF32 && value.dtype !== 'f32') throw new Error(`${this.constructor.name}: keep-f32 ${kind} '${name}' must be f32, got ${value.dtype}`);
    value.requiresGrad = kind === 'parameter';
    this.slots.set(name, { tensor: value, kind, keepF32: options.keepF32 ?? false });
  }

  private checkNewName(name: string): void {
    if (!NAME.test(name)) throw new Error(`${this.constructor.name}: invalid member name '${name}'`);
    if (this.slots.has(name) || this.children.has(name)) throw new Error(`${this.constructor.name}: '${name}' is already registered`);
  }

  /** Direct children, in registration order. */
  namedChildren(): [string, Module][] {
    return [...this.children];
  }

  /** This module and every descendant, with dotted paths ('' for this one). */
  namedModules(prefix = ''): [string, Module][] {
    const out: [string, Module][] = [[prefix, this]];
    for (const [name, child] of this.children) out.push(...child.namedModules(join(prefix, name)));
    return out;
  }

  /** Every parameter and buffer of the tree, in registration order (own tensors before children's). */
  namedTensors(prefix = ''): NamedTensor[] {
    const out: NamedTensor[] = [];
    for (const [path, module] of this.namedModules(prefix)) {
      for (const [name, slot] of module.slots) out.push({ name: join(path, name), tensor: slot.tensor, kind: slot.kind, keepF32: slot.keepF32 });
    }
    return out;
  }

  namedParameters(prefix = ''): [string, Parameter][] {
    return this.namedTensors(prefix)
      .filter((t) => t.kind === 'parameter')
      .map((t) => [t.name, t.tensor]);
  }

  parameters(): Parameter[] {
    return this.namedParameters().map(([, t]) => t);
  }

  namedBuffers(prefix = ''): [string, Tensor][] {
    return this.namedTensors(prefix)
      .filter((t) => t.kind === 'buffer')
      .map((t) => [t.name, t.tensor]);
  }

  /** Total number of parameter elements (buffers excluded). */
  numParameters(): number {
    return this.parameters().reduce((n, p) => n + p.size, 0);
  }

  /**
   * Parameters and buffers by dotted name. The tensors are the module's own (not copies): read
   * them, do not dispose them.
   */
  stateDict(): Map<string, Tensor> {
    return new Map(this.namedTensors().map((t) => [t.name, t.tensor]));
  }

  /** The tensor at a dotted path. */
  getTensor(path: string): Tensor {
    const [module, name] = this.resolveSlot(path);
    return module.slotTensor(name);
  }

  /**
   * Puts `value` into the slot at `path`: converted to the slot's dtype when it differs (otherwise
   * the storage is shared, not copied), as a fresh leaf that requires grad if the slot is a
   * parameter. The previous tensor is disposed; the caller keeps its own handle to `value`.
   */
  setTensor(path: string, value: Tensor): void {
    const [module, name] = this.resolveSlot(path);
    const slot = module.slots.get(name)!;
    const old = slot.tensor;
    if (!shapesEqual(value.shape, old.shape))
      throw new Error(`setTensor('${path}'): shape ${formatShape(value.shape)} does not match ${formatShape(old.shape)}`);
    if (value.device !== old.device) throw new Error(`setTensor('${path}'): tensor is on ${value.device.kind}, the module on ${old.device.kind}`);
    slot.tensor = noGrad(() => (value.dtype === old.dtype && value.isContiguous ? value.share() : cast(value, old.dtype)));
    slot.tensor.requiresGrad = old.requiresGrad;
    if (old !== slot.tensor) old.dispose();
  }

  private resolveSlot(path: string): [Module, string] {
    const parts = path.split('.');
    let module: Module = this;
    for (const part of parts.slice(0, -1)) {
      const child = module.children.get(part);
      if (!child) throw new Error(`${this.constructor.name} has no tensor '${path}' (no module '${part}')`);
      module = child;
    }
    const name = parts[parts.length - 1]!;
    if (!module.slots.has(name)) throw new Error(`${this.constructor.name} has no tensor '${path}'`);
    if (module.disposed) throw new Error(`${this.constructor.name}: '${path}' was used after dispose()`);
    return [module, name];
  }

  /**
   * Loads tensors by dotted name (see {@link setTensor} for dtype and ownership). Returns what was
   * missing, unexpected or mis-shaped; with `strict` (the default) any of those throws before a
   * single tensor is replaced. Mis-shaped tensors are never loaded.
   */
  loadStateDict(state: ReadonlyMap<string, Tensor> | Readonly<Record<string, Tensor>>, options: LoadOptions = {}): LoadReport {
    const entries = state instanceof Map ? state : new Map(Object.entries(state));
    const own = new Map(this.namedTensors().map((t) => [t.name, t.tensor]));
    const missing = [...own.keys()].filter((name) => !entries.has(name));
    const unexpected = [...entries.keys()].filter((name) => !own.has(name));
    const mismatched: ShapeMismatch[] = [];
    for (const [name, value] of entries) {
      const target = own.get(name);
      if (target && !shapesEqual(target.shape, value.shape)) mismatched.push({ name, expected: [...target.shape], actual: [...value.shape] });
    }
    const report: LoadReport = { missing, unexpected, mismatched, ignored: [] };
    if ((options.strict ?? true) && (missing.length || unexpected.length || mismatched.length)) {
      throw new Error(`loadStateDict: ${formatLoadReport(report)}`);
    }
    const skip = new Set(mismatched.map((m) => m.name));
    for (const [name, value] of entries) if (own.has(name) && !skip.has(name)) this.setTensor(name, value);
    return report;
  }

  /** Sets training mode on this module and every descendant. */
  train(mode = true): this {
    for (const [, m] of this.namedModules()) m.trainingMode = mode;
    return this;
  }

  /** Evaluation mode (`train(false)`). */
  eval(): this {
    return this.train(false);
  }

  /** Turns gradient tracking of every parameter on or off (freezing). */
  requiresGrad_(flag = true): this {
    for (const [, p] of this.namedParameters()) p.requiresGrad = flag;
    return this;
  }

  /** Drops every parameter's accumulated gradient (PyTorch's `zero_grad(set_to_none=True)`). */
  zeroGrad(): void {
    zeroGrad(this.parameters());
  }

  /** Casts every floating tensor that is not keep-f32 to `dtype`, in place (the synchronous half of {@link to}). */
  castFloating(dtype: FloatDType): this {
    for (const [, module] of this.namedModules()) {
      for (const slot of module.slots.values()) {
        const old = slot.tensor;
        if (!isFloat(old.dtype) || slot.keepF32 || old.dtype === dtype) continue;
        slot.tensor = noGrad(() => cast(old, dtype));
        slot.tensor.requiresGrad = old.requiresGrad;
        old.dispose();
      }
    }
    return this;
  }

  /**
   * Casts floating tensors to `dtype` (keep-f32 ones stay f32) and/or moves every tensor to
   * `device`. Moving between devices reads the data back, hence async.
   */
  async to(placement: Placement): Promise<this> {
    for (const [, module] of this.namedModules()) {
      for (const slot of module.slots.values()) {
        const old = slot.tensor;
        let next = old;
        const dtype = placement.dtype && isFloat(old.dtype) && !slot.keepF32 ? placement.dtype : old.dtype;
        if (placement.device && placement.device !== next.device) next = await transfer(next, placement.device);
        if (dtype !== next.dtype) {
          const converted = noGrad(() => cast(next, dtype));
          if (next !== old) next.dispose();
          next = converted;
        }
        if (next === old) continue;
        next.requiresGrad = old.requiresGrad;
        slot.tensor = next;
        old.dispose();
      }
    }
    return this;
  }

  /** Releases every tensor of the tree; the module cannot be used afterwards. */
  dispose(): void {
    for (const [, module] of this.namedModules()) {
      if (module.disposed) continue;
      module.disposed = true;
      for (const slot of module.slots.values()) slot.tensor.dispose();
    }
  }

  get isDisposed(): boolean {
    return this.disposed;
  }

  /** `using model = …` releases the tree at the end of the block. */
  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** An indexed list of modules (children named "0", "1", …), like `nn.ModuleList`. */
export class ModuleList<M extends Module> extends Module implements Iterable<M> {
  private readonly items: M[];

  constructor(modules: readonly M[]) {
    super();
    this.items = modules.map((m, i) => this.registerModule(String(i), m));
  }

  get length(): number {
    return this.items.length;
  }

  at(index: number): M {
    const m = this.items[index];
    if (!m) throw new RangeError(`ModuleList: index ${index} is outside 0..${this.items.length - 1}`);
    return m;
  }

  [Symbol.iterator](): Iterator<M> {
    return this.items[Symbol.iterator]();
  }
}

/** A one-line summary of a load report. */
export function formatLoadReport(report: LoadReport, labels: ShapeLabels = { expected: 'expected', actual: 'got' }): string {
  const parts: string[] = [];
  if (report.missing.length) parts.push(`missing ${report.missing.length} (${previewNames(report.missing)})`);
  if (report.unexpected.length) parts.push(`unexpected ${report.unexpected.length} (${previewNames(report.unexpected)})`);
  if (report.mismatched.length) {
    const shapes = report.mismatched.map((m) => `${m.name}: ${labels.expected} ${formatShape(m.expected)}, ${labels.actual} ${formatShape(m.actual)}`);
    parts.push(`mis-shaped ${report.mismatched.length} (${previewNames(shapes)})`);
  }
  if (report.ignored.length) parts.push(`ignored ${report.ignored.length} (${previewNames(report.ignored)})`);
  return parts.length ? parts.join('; ') : 'all tensors matched';
}

/** The first few names of a list, for error messages. */
export function previewNames(names: readonly string[], max = 5): string {
  return names.length <= max ? names.join(', ') : `${names.slice(0, max).join(', ')}, … ${names.length - max} more`;
}

function join(prefix: string, name: string): string {
  return prefix ? `${prefix}.${name}` : name;
}

function allocate(shape: readonly number[], placement: Placement, options: TensorSlotOptions): Tensor {
  return empty(shape, { dtype: options.keepF32 ? 'f32' : (placement.dtype ?? 'f32'), device: placement.device });
}

/** A copy of `t` on another device (through the host). */
export async function transfer(t: Tensor, device: Device): Promise<Tensor> {
  const values = await t.data();
  return tensor(values, t.shape, { dtype: t.dtype, device });
}
