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
import { type HostTensor, toHost } from './host-tensor';
import type { PipelineForwardResult, TransferStats } from './pipeline';
import { startWorkers, type StageWorkerOptions } from './stage-workers';
import type { WorkerGroup } from './worker-group';
import { concatExperts, dispatchExperts, expertsBackward, type ExpertRoute, type ShardCall } from './expert-dispatch';

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
    const layers = moeLayers.map(([i]) => i);
    const group = await startWorkers(
      model,
      Array.from({ length: ep }, (_, shard) => ({ plan: null, experts: { layers, shard, shards: ep } })),
      options,
      (r) => `expert shard ${r} (experts ${r * per}–${(r + 1) * per - 1})`,
    );
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

  private readonly callShard: ShardCall = (shard, method, args, step) => this.group.call(shard, method, args, { step });

  /** All-to-all: rows to the shards owning their experts, partial sums back, combined in rank order. */
  private async dispatch(
    layer: number,
    indices: Int32Array,
    weights: Float32Array,
    x: HostTensor,
    train: boolean,
  ): Promise<{ out: Float32Array; route: ExpertRoute }> {
    return dispatchExperts(this.callShard, this.group.size, this.expertsPerRank, { layer, indices, weights, x, train });
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
      hIn: Tensor;
      hRes: Tensor;
      S: Tensor;
      R: Tensor;
      routedIn: Tensor;
      weights: Tensor;
      shared: Tensor;
      route: ExpertRoute;
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
        const { out, route } = await this.dispatch(i, indices as Int32Array, weights as Float32Array, x, true);
        const R = keep(tensor(out, x.shape, { device })).requiresGrad_(true);
        const S = leaf(pre.shared);
        const hRes = leaf(hIn);
        h = keep(tidy(() => add(hRes, reshape(add(moe.fc2LatentProj ? moe.fc2LatentProj.forward(R) : R, S), hRes.shape))));
        moes.push({
          layer: i,
          hIn,
          hRes,
          S,
          R,
          routedIn: pre.routedIn,
          weights: pre.weights,
          shared: pre.shared,
          route,
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
        const grads = await this.expertsBackward(m.layer, m.R.grad!, m.route);
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
  private async expertsBackward(layer: number, gradOut: Tensor, route: ExpertRoute): Promise<{ x: Tensor; weights: Tensor }> {
    const grad = await toHost(gradOut);
    const { x, weights } = await expertsBackward(this.callShard, this.expertsPerRank, { layer, grad, route });
    const device = gradOut.device;
    const [T, Hx] = grad.shape as [number, number];
    return { x: keep(tensor(x, [T, Hx], { device })), weights: keep(tensor(weights, [T, route.k], { device })) };
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
    return new Map(Object.keys(parts[0] ?? {}).map((name) => [name, concatExperts(parts.map((p) => p[name]!))]));
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
