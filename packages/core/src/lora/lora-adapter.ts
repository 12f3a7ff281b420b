/**
 * One LoRA adapter on a Linear (Hu et al.; PEFT's `lora.Linear`): `delta(x) = (alpha / r) ·
 * B(A(dropout(x)))`, A [r, in] and B [out, r] as two bias-free f32 Linear modules named `lora_A` and
 * `lora_B` (PEFT's per-layer names, so the tree's parameter names end like the adapter file's keys).
 * A starts as PEFT's (kaiming-uniform with a = √5: U(−1/√in, 1/√in)), B at zero, so an adapter
 * changes nothing until trained.
 */
import { add, cast, copyInto, Generator, matmul, mul, narrow, noGrad, tensor, tidy, linear, type Tensor } from '@nemotron-ts/kernels';
import { Linear } from '../nn/linear';
import type { LinearAdapter } from '../nn/linear-adapter';
import type { Module } from '../nn/module';

export interface LoraAdapterOptions {
  readonly r: number;
  readonly alpha: number;
  /** Probability of zeroing an input element in training mode (PEFT's lora_dropout). */
  readonly dropout: number;
  /** Seeds A's initialisation and the dropout masks. */
  readonly seed: number;
}

export class LoraAdapter implements LinearAdapter {
  readonly loraA: Linear;
  readonly loraB: Linear;
  readonly modules: readonly (readonly [string, Module])[];
  /** alpha / r. */
  readonly scale: number;
  readonly dropout: number;
  private readonly dropoutGenerator: Generator;
  private isMerged = false;

  constructor(
    /** The layer this adapter belongs to. */
    readonly base: Linear,
    options: LoraAdapterOptions,
  ) {
    const { r, alpha, dropout, seed } = options;
    const device = base.weight.device;
    // f32 whatever the base's dtype, also after `model.to({ dtype })` (keep-f32 slots).
    this.loraA = new Linear(base.inFeatures, r, { device, keepF32: true });
    this.loraB = new Linear(r, base.outFeatures, { device, keepF32: true });
    this.modules = [
      ['lora_A', this.loraA],
      ['lora_B', this.loraB],
    ];
    this.scale = alpha / r;
    this.dropout = dropout;
    const initGenerator = new Generator(seed);
    this.dropoutGenerator = new Generator(seed ^ 0x9e3779b9);
    const bound = 1 / Math.sqrt(base.inFeatures);
    const a = new Float32Array(r * base.inFeatures);
    for (let i = 0; i < a.length; i++) a[i] = (2 * initGenerator.uniform() - 1) * bound;
    const initial = tensor(a, [r, base.inFeatures], { device });
    const zero = tensor(new Float32Array(base.outFeatures * r), [base.outFeatures, r], { device });
    this.loraA.setTensor('weight', initial);
    this.loraB.setTensor('weight', zero);
    initial.dispose();
    zero.dispose();
  }

  /** True while the term is folded into the base weight. */
  get merged(): boolean {
    return this.isMerged;
  }

  get active(): boolean {
    return !this.isMerged;
  }

  /** Restarts the dropout masks' stream from `seed` (a trainer reseeds per step, so a resumed run draws the same masks). */
  reseedDropout(seed: number): void {
    this.dropoutGenerator.seed(seed);
  }

  /** A(dropout(x)): f32 [..., r]. The dropout mask is drawn on the host from the adapter's own generator. */
  encode(x: Tensor, training: boolean): Tensor {
    if (!training || this.dropout === 0) return linear(x, this.loraA.weight);
    return tidy(() => {
      const keep = 1 / (1 - this.dropout);
      const mask = new Float32Array(x.size);
      for (let i = 0; i < mask.length; i++) mask[i] = this.dropoutGenerator.uniform() < this.dropout ? 0 : keep;
      return linear(mul(x, tensor(mask, x.shape, { device: x.device })), this.loraA.weight);
    });
  }

  /** (alpha / r) · code · B[rows]ᵀ: f32 [..., size]. */
  expand(code: Tensor, start: number, size: number): Tensor {
    return tidy(() => {
      const b = size === this.base.outFeatures ? this.loraB.weight : narrow(this.loraB.weight, 0, start, size);
      return mul(linear(code, b), this.scale);
    });
  }

  /** W += (alpha / r) · B A, in W's dtype (a bf16 weight is rounded, as PEFT's merge rounds). */
  merge(): void {
    if (this.isMerged) throw new Error('LoraAdapter.merge: already merged');
    this.foldInto(1);
    this.isMerged = true;
  }

  /** W −= (alpha / r) · B A: the inverse of {@link merge} (exact in f32 up to rounding). */
  unmerge(): void {
    if (!this.isMerged) throw new Error('LoraAdapter.unmerge: not merged');
    this.foldInto(-1);
    this.isMerged = false;
  }

  private foldInto(sign: 1 | -1): void {
    const weight = this.base.weight;
    noGrad(() =>
      tidy(() => {
        const delta = mul(matmul(this.loraB.weight, this.loraA.weight), sign * this.scale);
        copyInto(weight, cast(add(weight, delta), weight.dtype));
      }),
    );
  }

  dispose(): void {
    this.loraA.dispose();
    this.loraB.dispose();
  }
}
