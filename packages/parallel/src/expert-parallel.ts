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
import { type AdamW, backward, crossEntropy, keep, narrow, noGrad, tensor, tidy, type Tensor } from '@nemotron-ts/kernels';
import { IGNORE_INDEX, MoE, prepareInputs, type NemotronHBlock, type NemotronHForCausalLM, type PreparedInputs } from '@nemotron-ts/core';
import { checkBatch, type ParallelBatch } from './batch';
import { gradientSumOfSquares, groupedAdamW, scaleGradients, type TrainOptimizerOptions } from './gradient-ops';
import { HostTensor, toHost } from './host-tensor';
import { exportOptimizerState, importOptimizerState, type AdamParamState, type NamedOptimizerState } from './optimizer-state';
import { type Ask, ExpertCutRun } from './expert-cut';
import type { PipelineForwardResult, TransferStats } from './pipeline';
import { startWorkers, type StageWorkerOptions } from './stage-workers';
import type { WorkerGroup } from './worker-group';
import { concatExperts, dispatchExperts, expertsBackward, sliceExperts, type ExpertRoute, type ShardCall } from './expert-dispatch';
import { isRoutedExpert } from './expert-shards';

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
    const device = model.lmHead.weight.device;
    const { prepared, owned } = this.prepare(batch);
    const run = new ExpertCutRun(false);
    const h = noGrad(() => model.model.embeddings.forward(prepared.inputIds!));
    run.adopt(h);
    let out: Tensor | null = null;
    try {
      out = await run.forward(this.blocks(), h, this.ask(false), (block, _, x) => block.forward(x, prepared.sequences));
      const final = out;
      const { logits, loss } = noGrad(() =>
        tidy(() => {
          const logits = model.lmHead.forward(model.model.normF.forward(final));
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
      if (out !== h) out?.dispose();
      run.dispose();
      for (const t of owned) t.dispose();
    }
  }

  /** The model's blocks by backbone index. */
  private blocks(): Map<number, NemotronHBlock> {
    return new Map([...this.model.model.layers].map((b, i) => [i, b]));
  }

  private prepare(batch: ParallelBatch): { prepared: PreparedInputs; owned: Tensor[] } {
    const config = this.model.config;
    checkBatch(config, batch);
    const device = this.model.lmHead.weight.device;
    const prepared = noGrad(() => prepareInputs(config, device, { inputIds: batch.inputIds, attentionMask: batch.attentionMask, cuSeqlens: batch.cuSeqlens }));
    const owned = [prepared.inputIds, prepared.sequences.paddingMask, prepared.sequences.seqIdx].filter((t): t is Tensor => t !== null && t !== undefined);
    return { prepared, owned };
  }

  private readonly callShard: ShardCall = (shard, method, args, step) => this.group.call(shard, method, args, { step });

  /**
   * The host side of {@link ExpertCutRun}'s questions, answered here (the dense layers run on this
   * thread): each MoE layer's rows dispatched to the shards, and their backward.
   */
  private ask(train: boolean): Ask {
    const routes = new Map<number, ExpertRoute>();
    return async (q) => {
      if (q.kind === 'experts') {
        const { out, route } = await dispatchExperts(this.callShard, this.group.size, this.expertsPerRank, {
          layer: q.layer,
          indices: q.indices.data as Int32Array,
          weights: q.weights.toFloat32(),
          x: q.x,
          train,
        });
        if (train) routes.set(q.layer, route);
        return { out: HostTensor.fromF32(out, q.x.shape) };
      }
      const route = routes.get(q.layer);
      if (!route) throw new Error(`experts backward of layer ${q.layer}: no route kept from the forward`);
      routes.delete(q.layer);
      const grads = await expertsBackward(this.callShard, this.expertsPerRank, { layer: q.layer, grad: q.grad, route });
      return { x: HostTensor.fromF32(grads.x, q.grad.shape), weights: HostTensor.fromF32(grads.weights, [q.grad.shape[0]!, route.k]) };
    };
  }

  /**
   * Training forward and backward of a batch with HF labels: the host model's parameters get
   * their gradients (`model.parameters()[i].grad`, routed experts excepted) and each shard its
   * experts'. Returns the batch loss (HF mean).
   */
  async forwardBackward(batch: ParallelBatch): Promise<number> {
    const model = this.model;
    const device = model.lmHead.weight.device;
    if (!batch.labels) throw new Error('forwardBackward: the batch has no labels (HF labels; mtpLabels are not supported with expert parallelism)');
    const { prepared, owned } = this.prepare(batch);
    const run = new ExpertCutRun(true);
    const ask = this.ask(true);
    const h = keep(model.model.embeddings.forward(prepared.inputIds!));
    run.adopt(h);
    let out: Tensor | null = null;
    let loss: Tensor | null = null;
    try {
      out = await run.forward(this.blocks(), h, ask, (block, _, x) => block.forward(x, prepared.sequences));
      const final = out;
      loss = keep(
        tidy(() => {
          const logits = model.lmHead.forward(model.model.normF.forward(final));
          const L = logits.shape[1]!;
          const labels = tensor(Int32Array.from(batch.labels!.flat()), [batch.labels!.length, L], { device });
          return crossEntropy(narrow(logits, 1, 0, L - 1), narrow(labels, 1, 1, L - 1), { ignoreIndex: IGNORE_INDEX, reduction: 'mean' });
        }),
      );
      const value = await loss.item();
      // Backward from the loss to the last cut, then cut by cut down to the embeddings.
      backward(loss);
      await run.backwardCuts(ask);
      return value;
    } finally {
      loss?.dispose();
      if (out !== h) out?.dispose();
      run.dispose();
      for (const t of owned) t.dispose();
    }
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
    for (const name of Object.keys(parts[0]!.params)) {
      const shards = parts.map((p) => p.params[name]);
      if (shards.some((s) => s === undefined || s.step !== shards[0]!.step)) throw new Error(`ExpertParallel.optimizerState: the shards of '${name}' disagree`);
      const all = shards as AdamParamState[];
      params[name] = { step: all[0]!.step, expAvg: concatExperts(all.map((s) => s.expAvg)), expAvgSq: concatExperts(all.map((s) => s.expAvgSq)) };
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
    const stray = expertPart.find(([n]) => !isRoutedExpert(n));
    if (stray) throw new Error(`ExpertParallel.loadOptimizerState: no parameter '${stray[0]}'`);
    importOptimizerState(this.optimizer, here, { stepCount: state.stepCount, params: hostPart }, this.model.lmHead.weight.device, 'expert parallelism host');
    const per = this.expertsPerRank;
    await this.group.callAll(
      'loadOptimizerState',
      (r) => ({
        stepCount: state.stepCount,
        params: Object.fromEntries(
          expertPart.map(([name, s]) => [
            name,
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
