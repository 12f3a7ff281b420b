/**
 * Expert parallelism: every MoE layer's routed experts are sharded over `ep` workers (worker r
 * holds experts [r·E/ep, (r+1)·E/ep)); the router, the shared expert and every other layer stay
 * replicated on the host's device. At each MoE layer the host routes the tokens, dispatches each
 * token row to the workers owning one of its top-k experts (all-to-all through the host, no token
 * dropped, no capacity limit), each worker applies its experts to its rows, and the host combines
 * the partial sums (in rank order) before the shared expert is added — the one-device result up to
 * the order of that sum. `forwardBackward` trains through the dispatch: the host graph is cut at
 * each MoE layer (its inputs become leaves), and the backward runs segment by segment from the
 * loss down, each MoE layer's output gradient going to the shards, which return the gradients of
 * their rows and routing weights and keep their experts' gradients.
 */
import { add, type AdamW, backward, crossEntropy, detach, keep, mul, narrow, noGrad, reshape, sum, tensor, tidy, type Tensor } from '@nemotron-ts/kernels';
import { IGNORE_INDEX, MoE, prepareInputs, type NemotronHForCausalLM } from '@nemotron-ts/core';
import { checkBatch, type ParallelBatch } from './batch';
import { gradientSumOfSquares, groupedAdamW, scaleGradients, type TrainOptimizerOptions } from './gradient-ops';
import { HostTensor, toHost } from './host-tensor';
import { exportOptimizerState, importOptimizerState, type AdamParamState, type NamedOptimizerState } from './optimizer-state';
import type { PipelineForwardResult, TransferStats } from './pipeline';
import type { StageWorkerOptions } from './stage-workers';
import { WorkerGroup } from './worker-group';

export interface ExpertParallelOptions extends StageWorkerOptions {
  /** Expert-parallel size: workers holding a shard of the routed experts each (must divide n_routed_experts). */
  readonly expertParallel: number;
}

export class ExpertParallel {
  private constructor(
    readonly model: NemotronHForCausalLM,
    readonly group: WorkerGroup,
    readonly expertsPerRank: number,
  ) {}

  static async fromModel(model: NemotronHForCausalLM, options: ExpertParallelOptions): Promise<ExpertParallel> {
    const ep = options.expertParallel;
    const E = model.config.nRoutedExperts;
    if (!Number.isInteger(ep) || ep < 1) throw new Error(`expertParallel must be a positive integer, got ${ep}`);
    const moeLayers = [...model.model.layers].map((b, i) => [i, b.mixer] as const).filter((e): e is readonly [number, MoE] => e[1] instanceof MoE);
    if (moeLayers.length === 0) throw new Error(`expertParallel: the model has no MoE layer (pattern ${model.config.pattern})`);
    if (E % ep !== 0) throw new Error(`expertParallel: n_routed_experts (${E}) must be divisible by the expert-parallel size (${ep})`);
    const per = E / ep;
    const fallback = model.lmHead.weight.device.kind === 'cpu' ? 'cpu' : 'webgpu';
    const group = await WorkerGroup.start({
      size: ep,
      service: 'experts',
      devices: options.devices && options.devices.length > 0 ? options.devices : [fallback],
      heartbeatTimeoutMs: options.heartbeatTimeoutMs,
      describe: (r) => `expert shard ${r} (experts ${r * per}–${(r + 1) * per - 1})`,
    });
    try {
      for (const [layer, moe] of moeLayers) {
        const [up, down] = await Promise.all([toHost(moe.experts.upProj), toHost(moe.experts.downProj)]);
        await Promise.all(
          Array.from({ length: ep }, (_, r) =>
            group.call(
              r,
              'load',
              { layer, up: sliceExperts(up, r * per, per), down: sliceExperts(down, r * per, per) },
              { step: `loading experts of layer ${layer}` },
            ),
          ),
        );
      }
    } catch (e) {
      group.close();
      throw e;
    }
    return new ExpertParallel(model, group, per);
  }

  get transferStats(): TransferStats {
    return { bytesSent: this.group.bytesSent, bytesReceived: this.group.bytesReceived };
  }

  /** The forward pass with the routed experts on the workers: logits f32 [B, L, V] and the HF loss with labels. */
  async forward(batch: ParallelBatch): Promise<PipelineForwardResult> {
    const model = this.model;
    const config = model.config;
    const device = model.lmHead.weight.device;
    checkBatch(config, batch);
    const prepared = noGrad(() => prepareInputs(config, device, { inputIds: batch.inputIds, attentionMask: batch.attentionMask, cuSeqlens: batch.cuSeqlens }));
    const owned: Tensor[] = [prepared.inputIds!, prepared.sequences.paddingMask, prepared.sequences.seqIdx].filter((t): t is Tensor => t !== null);
    let h = noGrad(() => model.model.embeddings.forward(prepared.inputIds!));
    try {
      for (const [i, block] of [...model.model.layers].entries()) {
        const next =
          block.mixer instanceof MoE
            ? await this.moeBlock(i, block.mixer, block.norm.forward.bind(block.norm), h)
            : noGrad(() => tidy(() => block.forward(h, prepared.sequences)));
        h.dispose();
        h = next;
      }
      const { logits, loss } = noGrad(() =>
        tidy(() => {
          const logits = model.lmHead.forward(model.model.normF.forward(h));
          if (!batch.labels) return { logits, loss: null };
          const L = logits.shape[1]!;
          const labels = tensor(Int32Array.from(batch.labels.flat()), [batch.labels.length, L], { device });
          return { logits, loss: crossEntropy(narrow(logits, 1, 0, L - 1), narrow(labels, 1, 1, L - 1), { ignoreIndex: IGNORE_INDEX, reduction: 'mean' }) };
        }),
      );
      try {
        return { logits: await toHost(logits), loss: loss ? await loss.item() : null };
      } finally {
        logits.dispose();
        loss?.dispose();
      }
    } finally {
      h.dispose();
      for (const t of owned) t.dispose();
    }
  }

  /** One MoE block, `h + moe(norm(h))`, with the routed experts dispatched to their shards. */
  private async moeBlock(layer: number, moe: MoE, norm: (x: Tensor) => Tensor, h: Tensor): Promise<Tensor> {
    const H = this.model.config.hiddenSize;
    const local = noGrad(() =>
      tidy(() => {
        const tokens = reshape(norm(h), [-1, H]);
        const routing = moe.gate.forward(tokens);
        const routedIn = moe.fc1LatentProj ? moe.fc1LatentProj.forward(tokens) : tokens;
        return { routing, routedIn, shared: moe.sharedExperts.forward(tokens) };
      }),
    );
    try {
      const [indices, weights, x] = await Promise.all([local.routing.indices.data(), local.routing.weights.data(), toHost(local.routedIn)]);
      const { out: combined } = await this.dispatch(layer, indices as Int32Array, weights as Float32Array, x, false);
      return noGrad(() =>
        tidy(() => {
          const routed = tensor(combined, x.shape, { device: h.device });
          const routedOut = moe.fc2LatentProj ? moe.fc2LatentProj.forward(routed) : routed;
          return add(h, reshape(add(routedOut, local.shared), h.shape));
        }),
      );
    } finally {
      for (const t of [local.routing.indices, local.routing.weights, local.routedIn, local.shared]) t.dispose();
    }
  }

  /** All-to-all: rows to the shards owning their experts, partial sums back, combined in rank order. */
  private async dispatch(
    layer: number,
    indices: Int32Array,
    weights: Float32Array,
    x: HostTensor,
    train: boolean,
  ): Promise<{ out: Float32Array; plans: number[][] }> {
    const [T, Hx] = x.shape as [number, number];
    const k = indices.length / T;
    const xs = x.toFloat32();
    const per = this.expertsPerRank;
    const plans = Array.from({ length: this.group.size }, (_, r) => {
      const rows: number[] = [];
      for (let t = 0; t < T; t++) {
        for (let j = 0; j < k; j++) {
          if (Math.floor(indices[t * k + j]! / per) === r) {
            rows.push(t);
            break;
          }
        }
      }
      return rows;
    });
    const replies = await Promise.all(
      plans.map((rows, r) => {
        if (rows.length === 0) return Promise.resolve(null);
        const n = rows.length;
        const xr = new Float32Array(n * Hx);
        const ir = new Int32Array(n * k);
        const wr = new Float32Array(n * k);
        rows.forEach((t, m) => {
          xr.set(xs.subarray(t * Hx, (t + 1) * Hx), m * Hx);
          for (let j = 0; j < k; j++) {
            const e = indices[t * k + j]!;
            // Slots routed to another shard point at a local expert with weight 0: they add nothing.
            const mine = Math.floor(e / per) === r;
            ir[m * k + j] = mine ? e - r * per : 0;
            wr[m * k + j] = mine ? weights[t * k + j]! : 0;
          }
        });
        return this.group.call<HostTensor>(
          r,
          'experts',
          { layer, train, x: HostTensor.fromF32(xr, [n, Hx]), indices: HostTensor.fromI32(ir, [n, k]), weights: HostTensor.fromF32(wr, [n, k]) },
          { step: `experts of layer ${layer}` },
        );
      }),
    );
    const out = new Float32Array(T * Hx);
    replies.forEach((reply, r) => {
      if (!reply) return;
      const y = reply.toFloat32();
      plans[r]!.forEach((t, m) => {
        for (let c = 0; c < Hx; c++) out[t * Hx + c]! += y[m * Hx + c]!;
      });
    });
    return { out, plans };
  }

  /**
   * Training forward and backward of a batch with HF labels: the host model's parameters get
   * their gradients (`model.parameters()[i].grad`, routed experts excepted) and each shard its
   * experts'. Returns the batch loss (HF mean).
   */
  async forwardBackward(batch: ParallelBatch): Promise<number> {
    const model = this.model;
    const config = model.config;
    const device = model.lmHead.weight.device;
    checkBatch(config, batch);
    if (!batch.labels) throw new Error('forwardBackward: the batch has no labels (HF labels; mtpLabels are not supported with expert parallelism)');
    const H = config.hiddenSize;
    const prepared = noGrad(() => prepareInputs(config, device, { inputIds: batch.inputIds, attentionMask: batch.attentionMask, cuSeqlens: batch.cuSeqlens }));
    const owned: Tensor[] = [prepared.inputIds!, prepared.sequences.paddingMask, prepared.sequences.seqIdx].filter((t): t is Tensor => t !== null);
    const leaf = (t: Tensor) => keep(detach(t)).requiresGrad_(true);
    /** Graph pieces, in order: a segment ends at `out` (the next MoE layer's input, or the loss). */
    const segments: { out: Tensor }[] = [];
    const moes: {
      layer: number;
      k: number;
      hIn: Tensor;
      hRes: Tensor;
      S: Tensor;
      R: Tensor;
      routedIn: Tensor;
      weights: Tensor;
      shared: Tensor;
      indices: Int32Array;
      plans: number[][];
    }[] = [];
    try {
      let h = keep(model.model.embeddings.forward(prepared.inputIds!));
      for (const [i, block] of [...model.model.layers].entries()) {
        const moe = block.mixer;
        if (!(moe instanceof MoE)) {
          const next = keep(tidy(() => block.forward(h, prepared.sequences)));
          h.dispose();
          h = next;
          continue;
        }
        segments.push({ out: h });
        const hIn = leaf(h);
        const pre = tidy(() => {
          const tokens = reshape(block.norm.forward(hIn), [-1, H]);
          const routing = moe.gate.forward(tokens);
          return {
            indices: routing.indices,
            weights: routing.weights,
            routedIn: moe.fc1LatentProj ? moe.fc1LatentProj.forward(tokens) : tokens,
            shared: moe.sharedExperts.forward(tokens),
          };
        });
        for (const t of [pre.indices, pre.weights, pre.routedIn, pre.shared]) keep(t);
        const [indices, weights, x] = await Promise.all([pre.indices.data(), pre.weights.data(), toHost(pre.routedIn)]);
        pre.indices.dispose();
        const { out, plans } = await this.dispatch(i, indices as Int32Array, weights as Float32Array, x, true);
        const R = keep(tensor(out, x.shape, { device })).requiresGrad_(true);
        const S = leaf(pre.shared);
        const hRes = leaf(hIn);
        h = keep(tidy(() => add(hRes, reshape(add(moe.fc2LatentProj ? moe.fc2LatentProj.forward(R) : R, S), hRes.shape))));
        moes.push({
          layer: i,
          k: pre.weights.shape[1]!,
          hIn,
          hRes,
          S,
          R,
          routedIn: pre.routedIn,
          weights: pre.weights,
          shared: pre.shared,
          indices: indices as Int32Array,
          plans,
        });
      }
      const loss = keep(
        tidy(() => {
          const logits = model.lmHead.forward(model.model.normF.forward(h));
          const L = logits.shape[1]!;
          const labels = tensor(Int32Array.from(batch.labels!.flat()), [batch.labels!.length, L], { device });
          return crossEntropy(narrow(logits, 1, 0, L - 1), narrow(labels, 1, 1, L - 1), { ignoreIndex: IGNORE_INDEX, reduction: 'mean' });
        }),
      );
      segments.push({ out: loss });
      const value = await loss.item();
      // Backward, segment by segment from the loss down.
      let grad: Tensor | null = null;
      for (let j = segments.length - 1; j >= 0; j--) {
        const seg = segments[j]!;
        backward(seg.out, grad ? { grad } : {});
        grad?.dispose();
        grad = null;
        if (j === 0) break;
        const m = moes[j - 1]!;
        const grads = await this.expertsBackward(m.layer, m.k, m.R.grad!, m.indices, m.plans);
        // One pass through the layer's pre-expert graph: Σ output ⊙ its gradient, for each output.
        const dot = (a: Tensor, b: Tensor) => sum(reshape(mul(a, b), [-1]), 0);
        const seedSum = tidy(() => add(add(dot(m.routedIn, grads.x), dot(m.weights, grads.weights)), dot(m.shared, m.S.grad!)));
        grads.x.dispose();
        grads.weights.dispose();
        backward(seedSum);
        grad = keep(noGrad(() => add(m.hIn.grad!, m.hRes.grad!)));
      }
      return value;
    } finally {
      for (const s of segments) s.out.dispose();
      for (const m of moes) for (const t of [m.hIn, m.hRes, m.S, m.R, m.routedIn, m.weights, m.shared]) t.dispose();
      for (const t of owned) t.dispose();
    }
  }

  /** The shards' backward of one MoE layer: d/d(routed input rows) [T, Hx] and d/d(routing weights) [T, k], combined. */
  private async expertsBackward(layer: number, k: number, gradOut: Tensor, indices: Int32Array, plans: number[][]): Promise<{ x: Tensor; weights: Tensor }> {
    const g = await toHost(gradOut);
    const gs = g.toFloat32();
    const [T, Hx] = g.shape as [number, number];
    const per = this.expertsPerRank;
    const replies = await Promise.all(
      plans.map((rows, r) => {
        if (rows.length === 0) return Promise.resolve(null);
        const gr = new Float32Array(rows.length * Hx);
        rows.forEach((t, m) => gr.set(gs.subarray(t * Hx, (t + 1) * Hx), m * Hx));
        return this.group.call<{ x: HostTensor; weights: HostTensor }>(
          r,
          'backward',
          { layer, grad: HostTensor.fromF32(gr, [rows.length, Hx]) },
          { step: `experts backward of layer ${layer}` },
        );
      }),
    );
    const gx = new Float32Array(T * Hx);
    const gw = new Float32Array(T * k);
    replies.forEach((reply, r) => {
      if (!reply) return;
      const x = reply.x.toFloat32();
      const w = reply.weights.toFloat32();
      plans[r]!.forEach((t, m) => {
        for (let c = 0; c < Hx; c++) gx[t * Hx + c]! += x[m * Hx + c]!;
        // A slot's weight gradient comes from the shard that owns its expert only.
        for (let j = 0; j < k; j++) if (Math.floor(indices[t * k + j]! / per) === r) gw[t * k + j] = w[m * k + j]!;
      });
    });
    const device = gradOut.device;
    return { x: keep(tensor(gx, [T, Hx], { device })), weights: keep(tensor(gw, [T, k], { device })) };
  }

  /** The routed experts' accumulated gradients, stacked like the model's: `model.layers.{i}.mixer.experts.{up,down}_proj`. */
  expertGradients(): Promise<Map<string, HostTensor>> {
    return this.gatherExperts('gradients');
  }

  private optimizer: AdamW | null = null;

  /** AdamW over the host's parameters (routed experts excepted) and one per shard over its experts. */
  async setOptimizer(options: TrainOptimizerOptions): Promise<void> {
    const experts = this.routedExperts();
    this.optimizer = groupedAdamW(
      this.model.namedParameters().filter(([, p]) => !experts.has(p)),
      options,
    );
    await this.group.callAll('optimizer', () => options);
  }

  private routedExperts(): Set<Tensor> {
    return new Set([...this.model.model.layers].flatMap((b) => (b.mixer instanceof MoE ? [b.mixer.experts.upProj, b.mixer.experts.downProj] : [])));
  }

  /** The global gradient norm: the host's parameters and every shard's experts. */
  async gradientNorm(): Promise<number> {
    const experts = this.routedExperts();
    const here = await gradientSumOfSquares(this.model.parameters().filter((p) => !experts.has(p)));
    const parts = await this.group.callAll<number>('gradientSumOfSquares', () => null, { step: 'gradient norm' });
    return Math.sqrt(parts.reduce((a, b) => a + b, here));
  }

  /** Every gradient (host and shards) times `factor`. */
  async scaleGradients(factor: number): Promise<void> {
    const experts = this.routedExperts();
    scaleGradients(
      this.model.parameters().filter((p) => !experts.has(p)),
      factor,
    );
    await this.group.callAll('scaleGradients', () => ({ factor }), { step: 'gradient scaling' });
  }

  async step(lrScale = 1): Promise<void> {
    if (!this.optimizer) throw new Error('ExpertParallel.step: call setOptimizer first');
    this.optimizer.step({ lrScale });
    await this.group.callAll('step', () => ({ lrScale }), { step: 'optimizer step' });
  }

  /** Zero, forward and backward through the dispatch, AdamW step. Returns the batch loss. */
  async trainStep(batch: ParallelBatch): Promise<number> {
    await this.zeroGrad();
    const loss = await this.forwardBackward(batch);
    await this.step();
    return loss;
  }

  /** The routed experts' weights gathered from the shards, stacked like the model's (the host's own weights are already current). */
  expertWeights(): Promise<Map<string, HostTensor>> {
    return this.gatherExperts('weights');
  }

  /** Every weight by name: the host's, with the routed experts gathered from the shards. */
  async weights(): Promise<Map<string, HostTensor>> {
    const out = new Map<string, HostTensor>();
    for (const t of this.model.namedTensors()) out.set(t.name, await toHost(t.tensor));
    for (const [name, t] of await this.gatherExperts('weights')) out.set(name, t);
    return out;
  }

  private async gatherExperts(method: 'gradients' | 'weights'): Promise<Map<string, HostTensor>> {
    const parts = await this.group.callAll<Record<string, HostTensor>>(method);
    const out = new Map<string, HostTensor>();
    for (const key of Object.keys(parts[0] ?? {})) out.set(expertTensorName(key), stackExperts(parts.map((p) => p[key]!)));
    return out;
  }

  /** The AdamW state of the host's parameters and of every shard's experts (stacked like the model's), by full-model name. */
  async optimizerState(): Promise<NamedOptimizerState> {
    if (!this.optimizer) throw new Error('ExpertParallel.optimizerState: call setOptimizer first');
    const experts = this.routedExperts();
    const here = await exportOptimizerState(
      this.optimizer,
      this.model.namedParameters().filter(([, p]) => !experts.has(p)),
    );
    const parts = await this.group.callAll<NamedOptimizerState>('optimizerState', () => null, { step: 'reading the optimizer state' });
    const params: Record<string, AdamParamState> = { ...here.params };
    for (const key of Object.keys(parts[0]!.params)) {
      const shards = parts.map((p) => p.params[key]!);
      if (shards.some((s) => s === undefined || s.step !== shards[0]!.step)) throw new Error(`ExpertParallel.optimizerState: the shards of '${key}' disagree`);
      params[expertTensorName(key)] = {
        step: shards[0]!.step,
        expAvg: stackExperts(shards.map((s) => s.expAvg)),
        expAvgSq: stackExperts(shards.map((s) => s.expAvgSq)),
      };
    }
    return { stepCount: here.stepCount, params };
  }

  /** Replaces the host's and the shards' AdamW state (a resumed run's): each shard gets its experts' rows. */
  async loadOptimizerState(state: NamedOptimizerState): Promise<void> {
    if (!this.optimizer) throw new Error('ExpertParallel.loadOptimizerState: call setOptimizer first');
    const experts = this.routedExperts();
    const here = this.model.namedParameters().filter(([, p]) => !experts.has(p));
    const hostNames = new Set(here.map(([n]) => n));
    const hostPart = Object.fromEntries(Object.entries(state.params).filter(([n]) => hostNames.has(n)));
    const expertPart = Object.entries(state.params).filter(([n]) => !hostNames.has(n));
    const shardKey = (name: string): string => {
      const m = /^model\.layers\.(\d+)\.mixer\.experts\.(up_proj|down_proj)$/.exec(name);
      if (!m) throw new Error(`ExpertParallel.loadOptimizerState: no parameter '${name}'`);
      return `${m[1]}.${m[2]}`;
    };
    importOptimizerState(this.optimizer, here, { stepCount: state.stepCount, params: hostPart }, this.model.lmHead.weight.device, 'expert parallelism host');
    const per = this.expertsPerRank;
    await this.group.callAll(
      'loadOptimizerState',
      (r) => ({
        stepCount: state.stepCount,
        params: Object.fromEntries(
          expertPart.map(([name, s]) => [
            shardKey(name),
            { step: s.step, expAvg: sliceExperts(s.expAvg, r * per, per), expAvgSq: sliceExperts(s.expAvgSq, r * per, per) },
          ]),
        ),
      }),
      { step: 'loading the optimizer state' },
    );
  }

  async zeroGrad(): Promise<void> {
    this.model.zeroGrad();
    await this.group.callAll('zeroGrad');
  }

  /** The end of a run: workers free their tensors, then are terminated one after another. */
  shutdown(): Promise<void> {
    return this.group.shutdown();
  }

  /** Terminates every worker now. */
  close(): void {
    this.group.close();
  }
}

/** A shard's key (`<layer>.up_proj`) as the model names the stacked tensor. */
function expertTensorName(key: string): string {
  const [layer, proj] = key.split('.') as [string, string];
  return `model.layers.${layer}.mixer.experts.${proj}`;
}

/** The shards' [E/ep, ...] tensors stacked (rank order) into [E, ...] f32. */
function stackExperts(shards: readonly HostTensor[]): HostTensor {
  const data = new Float32Array(shards.reduce((n, t) => n + t.data.length, 0));
  let at = 0;
  for (const t of shards) {
    data.set(t.toFloat32(), at);
    at += t.data.length;
  }
  return HostTensor.fromF32(data, [shards.reduce((n, t) => n + t.shape[0]!, 0), ...shards[0]!.shape.slice(1)]);
}

/** Experts [start, start + count) of a stacked [E, ...] tensor. */
function sliceExperts(t: HostTensor, start: number, count: number): HostTensor {
  const per = t.data.length / t.shape[0]!;
  return new HostTensor(t.dtype, [count, ...t.shape.slice(1)], t.data.slice(start * per, (start + count) * per));
}
