/**
 * The worker side of pipeline, data and expert parallelism: one {@link PipelineStage} (a
 * data-parallel replica is the one-stage split: the whole model) and/or a shard of routed experts
 * ({@link ExpertShards}), and the requests the host's schedules send — forward and backward of a
 * microbatch, the experts of dispatched rows, gradients, the optimizer step, and cached
 * prefill/decode for generation. With expert parallelism the stage's MoE layers ask the host for
 * their experts mid-request ({@link HostExchange}: `resume` answers). Tensors cross as
 * {@link HostTensor}s; everything else stays on this device.
 */
import {
  add,
  type AdamW,
  argmax,
  backward,
  backwardAsync,
  cast,
  copyInto,
  formatShape,
  shapesEqual,
  crossEntropy,
  keep,
  mul,
  narrow,
  noGrad,
  reshape,
  tensor,
  tidy,
  zeroGrad,
  zeros,
  type Device,
  type FloatDType,
  type Tensor,
} from '@nemotron-ts/kernels';
import {
  applyLora,
  decodePosition,
  IGNORE_INDEX,
  Linear,
  loraHandle,
  matchesTarget,
  reseedLoraDropout,
  type LoraConfig,
  NemotronHConfig,
  NemotronHybridCache,
  prefillPositions,
  prepareInputs,
  type Rows,
  type SequenceInfo,
} from '@nemotron-ts/core';
import { gradientSumOfSquares, groupedAdamW, scaleGradients, type TrainOptimizerOptions } from './gradient-ops';
import { fromHost, type HostTensor, toHost } from './host-tensor';
import { ExpertCutRun, HostExchange, type Ask, type ExpertAnswer } from './expert-cut';
import { ExpertShards, isRoutedExpert, type ExpertShardBackward, type ExpertShardRequest } from './expert-shards';
import { MasterWeights } from './master-weights';
import { exportOptimizerState, importOptimizerState, type NamedOptimizerState } from './optimizer-state';
import { PipelineStage } from './pipeline-stage';
import { unknownMethod, type EmitPart, type ServiceContext, type WorkerService } from './service';
import type { StagePlan } from './stage-plan';

export interface StageServiceOptions {
  /** config.json of the model. */
  readonly config: Record<string, unknown>;
  /** The stage this worker runs; null for a worker holding only an expert shard. */
  readonly plan: StagePlan | null;
  /** The stage's routed experts are sharded over its expert group (its MoE layers ask the host for them; `loadExperts` gives this worker its shard). */
  readonly expertParallel?: boolean;
  /** Names the worker in errors ("pipeline stage 1", "expert shard 1 of stage 0"). */
  readonly label?: string;
  readonly dtype: FloatDType;
  /** Initialise the weights with this seed (NeMo's init, trimmed-stage aware) instead of loading them. */
  readonly seed?: number | null;
  /** LoRA adapters on the stage's matching Linear layers (the host model's options: the same initial A per layer name). */
  readonly lora?: LoraConfig | null;
}

/** A microbatch's rows as sent to a stage. */
export interface StageBatch {
  /** Microbatch id (its saved activations and cache are kept under it). */
  readonly mb: number;
  /** First stage: token ids i32 [B, L]. */
  readonly ids?: HostTensor;
  /** Other stages: the previous stage's hidden state [B, L, H] (and the MTP embeddings). */
  readonly hidden?: HostTensor;
  readonly embeds?: HostTensor[];
  readonly attentionMask?: Rows | null;
  readonly cuSeqlens?: number[] | null;
}

export interface ForwardRequest extends StageBatch {
  /** Keep the graph for a backward. */
  readonly train: boolean;
  /** Last stage: HF labels i32 [B, L] (shifted inside), or NeMo's pre-shifted MTP labels. */
  readonly labels?: HostTensor | null;
  readonly mtpLabels?: Rows | null;
  /** The last stage also needs the ids for MTP targets' roll (its own stage has no embeddings). */
  readonly mtpIds?: HostTensor | null;
  /** 1 / (target count of the whole batch): microbatch losses are sums scaled by it, so they add up to the batch mean. */
  readonly lossScale?: number;
  /** Last stage: send the logits back. */
  readonly returnLogits?: boolean;
}

/** A decode step's request: the new ids (first stage) or the previous stage's hidden state. */
interface DecodeRequest {
  readonly mb: number;
  readonly ids?: number[];
  readonly hidden?: HostTensor;
  readonly returnLogits?: boolean;
}

type GenerationReply = { hidden?: HostTensor; tokens?: number[]; logits?: HostTensor };

export interface ForwardReply {
  /** Non-last stages: the hidden state and MTP embeddings for the next stage. */
  readonly outputs?: HostTensor[];
  /** Last stage with labels. */
  readonly loss?: number | null;
  readonly logits?: HostTensor | null;
}

/** A backward's request: the next stage's gradients, and (data parallelism, last stage) the all-reduce buckets to send as they finish. */
interface BackwardRequest {
  readonly mb: number;
  readonly grads?: HostTensor[];
  readonly buckets?: string[][] | null;
}

interface Saved {
  readonly inputs: Tensor[];
  readonly outputs: Tensor[];
  /** With expert parallelism: the cuts at the MoE layers, for the rest of the backward. */
  readonly cut: ExpertCutRun | null;
}

export function createStageService(context: ServiceContext): WorkerService {
  const options = context.options as StageServiceOptions;
  const device = context.device;
  const config = NemotronHConfig.fromJSON(options.config);
  const label = options.label ?? (options.plan ? `stage ${options.plan.index}` : `expert shard ${context.rank}`);
  const stage = options.plan
    ? PipelineStage.create(config, options.plan, { dtype: options.dtype, device }, { shardedExperts: options.expertParallel ?? false })
    : null;
  if (stage && options.seed !== undefined && options.seed !== null) stage.initializeWeights(options.seed);
  // A stage without a targeted layer (say targets [lm_head] on the first stage) trains nothing.
  const lora = options.lora ?? null;
  if (stage && lora) {
    if (stage.namedModules().some(([name, m]) => m instanceof Linear && matchesTarget(name, lora.targetModules))) applyLora(stage, lora);
    else stage.requiresGrad_(false);
  }
  // With LoRA the routed experts (no Linear layers) stay frozen.
  const shards = !stage || options.expertParallel ? new ExpertShards(device, label, { trainable: !lora }) : null;
  return new StageService(stage, shards, device, label, lora);
}

class StageService implements WorkerService {
  private readonly saved = new Map<number, Saved>();
  private readonly caches = new Map<number, NemotronHybridCache>();
  private optimizer: AdamW | null = null;
  /** f32 masters of bf16 trained parameters (what the optimizer updates), with the optimizer. */
  private masters: MasterWeights | null = null;
  private readonly exchange = new HostExchange();

  constructor(
    private readonly maybeStage: PipelineStage | null,
    /** This worker's expert shard (with expert parallelism; the stage's own routed experts then go unused). */
    private readonly shards: ExpertShards | null,
    private readonly device: Device,
    private readonly label: string,
    private readonly lora: LoraConfig | null,
  ) {}

  private requireShards(): ExpertShards {
    if (!this.shards) throw new Error(`${this.label} holds no expert shard (expert parallelism is off)`);
    return this.shards;
  }

  private get stage(): PipelineStage {
    if (!this.maybeStage) throw new Error(`${this.label} holds experts only (no stage)`);
    return this.maybeStage;
  }

  /** The parameters this worker trains, by full-model name: the stage's (routed experts excepted with expert parallelism) and the expert shard's. */
  private namedParameters(): [string, Tensor][] {
    const own = this.maybeStage?.namedParameters() ?? [];
    const stageParams = this.shards ? own.filter(([name]) => !isRoutedExpert(name)) : own;
    return [...stageParams, ...(this.shards?.namedParameters() ?? [])];
  }

  /** The parameters training updates: every one, or only the LoRA adapters' (the base is frozen). */
  private trained(): [string, Tensor][] {
    return this.namedParameters().filter(([, p]) => p.requiresGrad);
  }

  private parameters(): Tensor[] {
    return this.namedParameters().map(([, p]) => p);
  }

  /** Every tensor this worker holds for the model, by name (parameters and buffers). */
  private namedTensors(): { name: string; tensor: Tensor; kind: string }[] {
    const own = this.maybeStage?.namedTensors() ?? [];
    const stageTensors = this.shards ? own.filter((t) => !isRoutedExpert(t.name)) : own;
    return [
      ...stageTensors.map((t) => ({ name: t.name, tensor: t.tensor, kind: t.kind as string })),
      ...(this.shards?.namedParameters() ?? []).map(([name, tensor]) => ({ name, tensor, kind: 'parameter' })),
    ];
  }

  handle(method: string, args: unknown, emit: EmitPart): unknown {
    switch (method) {
      case 'load':
        return this.load(args as { tensors: Record<string, HostTensor> });
      case 'loadExperts':
        return this.requireShards().load(args as { layer: number; up: HostTensor; down: HostTensor });
      case 'names':
        return this.namedTensors().map((t) => ({
          name: t.name,
          shape: t.tensor.shape,
          dtype: t.tensor.dtype,
          kind: t.kind,
          trained: t.kind === 'parameter' && t.tensor.requiresGrad,
        }));
      case 'forward':
        return this.shards ? this.exchange.start((ask) => this.forwardCut(args as ForwardRequest, ask)) : this.forward(args as ForwardRequest);
      case 'backward': {
        const req = args as BackwardRequest;
        // Gradient buckets are sent during the backward only without expert cuts (data parallelism's overlap).
        return this.saved.get(req.mb)?.cut ? this.exchange.start((ask) => this.backward(req, emit, ask)) : this.backward(req, emit);
      }
      case 'resume':
        return this.exchange.resume(args as ExpertAnswer);
      case 'abandon':
        return this.exchange.abandon((args as { reason: string }).reason);
      case 'experts':
        return this.requireShards().forward(args as ExpertShardRequest);
      case 'expertsBackward':
        return this.requireShards().backward(args as ExpertShardBackward);
      case 'gradients':
        return this.gradients(args as { names?: string[] } | null);
      case 'setGradients':
        return this.setGradients(args as { grads: Record<string, HostTensor> });
      case 'zeroGrad':
        zeroGrad(this.parameters());
        return null;
      case 'optimizer':
        this.optimizer?.dispose();
        this.masters?.dispose();
        this.masters = new MasterWeights(this.trained());
        this.optimizer = groupedAdamW(this.masters.named(), args as TrainOptimizerOptions);
        return null;
      case 'optimizerState':
        return exportOptimizerState(this.requireOptimizer(), this.masters!.named());
      case 'loadOptimizerState':
        return importOptimizerState(this.requireOptimizer(), this.masters!.named(), args as NamedOptimizerState, this.device, this.label);
      case 'masterWeights':
        return this.masterWeights();
      case 'loadMasterWeights':
        return this.loadMasterWeights(args as { tensors: Record<string, HostTensor> });
      case 'reseedDropout':
        // LoRA dropout masks per step, as the one-device trainer draws them.
        if (this.lora && this.lora.dropout > 0 && this.maybeStage && loraHandle(this.maybeStage))
          reseedLoraDropout(this.maybeStage, (args as { step: number }).step);
        return null;
      case 'gradientSumOfSquares':
        return gradientSumOfSquares(this.parameters());
      case 'scaleGradients':
        scaleGradients(this.parameters(), (args as { factor: number }).factor);
        return null;
      case 'step':
        return this.step(args as { lrScale?: number });
      case 'weights':
        return this.weights(args as { names?: string[]; trained?: boolean } | null);
      case 'prefill': {
        const req = args as StageBatch & { capacity: number; returnLogits?: boolean };
        return this.shards ? this.exchange.start((ask) => this.prefillCut(req, ask)) : this.prefill(req);
      }
      case 'decode': {
        const req = args as DecodeRequest;
        return this.shards ? this.exchange.start((ask) => this.decodeCut(req, ask)) : this.decode(req);
      }
      case 'release':
        this.caches.get((args as { mb: number }).mb)?.dispose();
        this.caches.delete((args as { mb: number }).mb);
        return null;
      default:
        return unknownMethod('pipeline stage', method);
    }
  }

  private load({ tensors }: { tensors: Record<string, HostTensor> }): number {
    let n = 0;
    for (const [name, host] of Object.entries(tensors)) {
      const t = fromHost(host, this.device);
      if (this.optimizer) {
        // The optimizer holds the parameters themselves: write into them, not new tensors beside them.
        const p = this.stage.getTensor(name);
        if (!shapesEqual(p.shape, t.shape)) throw new Error(`${this.label}: '${name}' is ${formatShape(p.shape)}, got ${formatShape(t.shape)}`);
        noGrad(() => tidy(() => copyInto(p, t.dtype === p.dtype ? t : cast(t, p.dtype))));
        p.storage.invalidateDerived();
        const master = this.masters!.copyOf(p);
        if (master) noGrad(() => tidy(() => copyInto(master, t.dtype === 'f32' ? t : cast(t, 'f32'))));
      } else this.stage.setTensor(name, t);
      t.dispose();
      n++;
    }
    return n;
  }

  private sequences(batch: StageBatch, first: Tensor): SequenceInfo {
    return this.prepare(batch, first);
  }

  /** The batch's sequence layout (padding mask, packed documents); its tensors are the caller's. */
  private prepare(batch: StageBatch, first: Tensor): SequenceInfo {
    const inputs = first.dtype === 'i32' ? { inputIds: first } : { inputsEmbeds: first };
    return noGrad(() =>
      prepareInputs(this.stage.config, this.device, {
        ...inputs,
        attentionMask: batch.attentionMask ?? undefined,
        cuSeqlens: batch.cuSeqlens ?? undefined,
      }),
    ).sequences;
  }

  /** The stage's input tensors: ids (first stage) or hidden state + MTP embeddings as leaves. */
  private inputs(batch: StageBatch, train: boolean): { ids: Tensor | null; hidden: Tensor | null; embeds: Tensor[] } {
    const plan = this.stage.plan;
    if (plan.isFirst) {
      if (!batch.ids) throw new Error(`stage ${plan.index}: the first stage takes token ids`);
      return { ids: fromHost(batch.ids, this.device), hidden: null, embeds: [] };
    }
    if (!batch.hidden) throw new Error(`stage ${plan.index}: expected the previous stage's hidden state`);
    const leaf = (h: HostTensor) => fromHost(h, this.device).requiresGrad_(train);
    return { ids: null, hidden: leaf(batch.hidden), embeds: (batch.embeds ?? []).map(leaf) };
  }

  private async forward(req: ForwardRequest): Promise<ForwardReply> {
    const stage = this.stage;
    const plan = stage.plan;
    if (this.saved.has(req.mb)) throw new Error(`stage ${plan.index}: microbatch ${req.mb} already ran forward without a backward`);
    // Dropout (LoRA's) only in a training forward.
    stage.train(req.train);
    const run = () =>
      tidy(() => {
        const { ids, hidden, embeds: receivedEmbeds } = this.inputs(req, req.train);
        const h = ids ? stage.embed(ids) : hidden!;
        const sequences = this.sequences(req, ids ?? hidden!);
        const embeds = ids && stage.mtpDepths > 0 ? stage.buildMtpEmbedInputsForPp(ids) : receivedEmbeds;
        const out = stage.forwardLayers(h, sequences);
        const inputs = [hidden, ...receivedEmbeds].filter((t): t is Tensor => t !== null);
        if (!plan.isLast) return { inputs, outputs: [out, ...embeds], loss: null, logits: null };
        const final = stage.finalNorm(out);
        const logits = stage.logits(final);
        const loss = this.loss(req, final, logits, embeds, sequences);
        return { inputs, outputs: loss ? [loss] : [], loss, logits };
      });
    return this.forwardReply(req, req.train ? run() : noGrad(run), null);
  }

  /**
   * The forward with the stage's routed experts held by its expert group: the MoE layers ask the
   * host for their experts' output ({@link ExpertCutRun}); in training the cuts are kept for the backward.
   */
  private async forwardCut(req: ForwardRequest, ask: Ask): Promise<ForwardReply> {
    const stage = this.stage;
    const plan = stage.plan;
    if (this.saved.has(req.mb)) throw new Error(`stage ${plan.index}: microbatch ${req.mb} already ran forward without a backward`);
    // Dropout (LoRA's) only in a training forward.
    stage.train(req.train);
    const graph = <T>(f: () => T): T => (req.train ? f() : noGrad(f));
    const cut = new ExpertCutRun(req.train);
    const { ids, hidden, embeds: receivedEmbeds } = this.inputs(req, req.train);
    const prepared = this.prepare(req, ids ?? hidden!);
    const temporaries: Tensor[] = [ids, prepared.paddingMask, prepared.seqIdx].filter((t): t is Tensor => t !== null);
    try {
      const h = ids ? keep(graph(() => stage.embed(ids))) : hidden!;
      if (ids) cut.adopt(h);
      const embeds = ids && stage.mtpDepths > 0 ? graph(() => stage.buildMtpEmbedInputsForPp(ids)).map(keep) : receivedEmbeds;
      const out = await cut.forward(stage.model.layers.blocks, h, ask, (block, _, x) => block.forward(x, prepared));
      const inputs = [hidden, ...receivedEmbeds].filter((t): t is Tensor => t !== null);
      if (!plan.isLast) return await this.forwardReply(req, { inputs, outputs: [out, ...embeds], loss: null, logits: null }, cut);
      if (out !== h) temporaries.push(out);
      if (ids) temporaries.push(...embeds);
      const { loss, logits } = graph(() =>
        tidy(() => {
          const final = stage.finalNorm(out);
          const logits = stage.logits(final);
          return { logits, loss: this.loss(req, final, logits, embeds, prepared) };
        }),
      );
      return await this.forwardReply(req, { inputs, outputs: loss ? [loss] : [], loss, logits }, cut);
    } catch (e) {
      cut.dispose();
      throw e;
    } finally {
      for (const t of temporaries) t.dispose();
    }
  }

  /** A forward's answer to the host; in training the microbatch's graph is kept for its backward. */
  private async forwardReply(
    req: ForwardRequest,
    result: { inputs: Tensor[]; outputs: Tensor[]; loss: Tensor | null; logits: Tensor | null },
    cut: ExpertCutRun | null,
  ): Promise<ForwardReply> {
    const plan = this.stage.plan;
    try {
      if (!plan.isLast) {
        const outputs = await Promise.all(result.outputs.map((t) => toHost(t)));
        return { outputs };
      }
      const loss = result.loss ? await result.loss.item() : null;
      const logits = req.returnLogits ? await toHost(result.logits!) : null;
      return { loss, logits };
    } finally {
      if (req.train) {
        this.saved.set(req.mb, { inputs: result.inputs.map(keep), outputs: result.outputs.map(keep), cut });
        result.logits?.dispose();
      } else {
        for (const t of [...result.inputs, ...result.outputs, result.logits]) t?.dispose();
        cut?.dispose();
      }
    }
  }

  /** Last stage: the microbatch's share of the batch loss (HF labels, or NeMo's MTP loss). */
  private loss(req: ForwardRequest, final: Tensor, logits: Tensor, embeds: Tensor[], sequences: SequenceInfo): Tensor | null {
    const scale = req.lossScale ?? 1;
    const [batch, length] = logits.shape as [number, number];
    if (req.mtpLabels) {
      const stage = this.stage;
      const rows = req.mtpLabels;
      const target = (r: Rows) => tensor(Int32Array.from(r.flat()), [batch, length], { device: this.device });
      const ce = (l: Tensor, r: Rows) => mul(crossEntropy(l, target(r), { ignoreIndex: IGNORE_INDEX, reduction: 'sum' }), scale);
      let total = ce(logits, rows);
      if (stage.mtp) {
        if (!req.mtpIds) throw new Error(`stage ${stage.plan.index}: the MTP loss needs the microbatch's ids`);
        const ids = fromHost(req.mtpIds, this.device);
        const depths = stage.mtpHidden(final, ids, embeds, sequences);
        const documents = req.cuSeqlens ? documentOf(req.cuSeqlens, length) : null;
        const losses = depths.map((h, k) => ce(stage.logits(h), mtpTargets(rows, k + 1, documents)));
        const mtpLoss = mul(
          losses.slice(1).reduce((s, l) => add(s, l), losses[0]!),
          stage.config.mtpLossScalingFactor / depths.length,
        );
        total = add(total, mtpLoss);
      }
      return total;
    }
    if (!req.labels) return null;
    if (length < 2) return zeros([], { device: this.device });
    const labels = fromHost(req.labels, this.device);
    return mul(crossEntropy(narrow(logits, 1, 0, length - 1), narrow(labels, 1, 1, length - 1), { ignoreIndex: IGNORE_INDEX, reduction: 'sum' }), scale);
  }

  /**
   * Backward of a training forward: from the loss (last stage) or the next stage's gradients of
   * this stage's outputs, then (expert parallelism) through the MoE cuts, asking the host for the
   * experts' backward. Returns the gradients of the stage's inputs.
   */
  private async backward({ mb, grads, buckets }: BackwardRequest, emit: EmitPart, ask?: Ask): Promise<{ grads: HostTensor[] }> {
    const saved = this.saved.get(mb);
    const plan = this.stage.plan;
    if (!saved) throw new Error(`stage ${plan.index}: no forward of microbatch ${mb} to run backward through`);
    this.saved.delete(mb);
    try {
      if (plan.isLast) {
        if (saved.outputs.length !== 1) throw new Error(`stage ${plan.index}: microbatch ${mb} had no labels, so there is no loss to differentiate`);
        if (buckets && !saved.cut) await this.backwardSendingBuckets(saved.outputs[0]!, buckets, emit);
        else backward(saved.outputs[0]!);
      } else {
        if (!grads || grads.length !== saved.outputs.length)
          throw new Error(`stage ${plan.index}: ${grads?.length ?? 0} gradients for ${saved.outputs.length} outputs`);
        saved.outputs.forEach((out, i) => {
          if (!out.requiresGrad) return;
          const g = fromHost(grads[i]!, this.device);
          // The outputs' graphs are disjoint (the hidden state; each MTP embedding), so each runs alone.
          backward(out, { grad: g });
          g.dispose();
        });
      }
      if (saved.cut) {
        if (!ask) throw new Error(`stage ${plan.index}: microbatch ${mb} has expert-parallel layers, so its backward needs the host`);
        await saved.cut.backwardCuts(ask);
      }
      return { grads: await Promise.all(saved.inputs.map((t) => (t.grad ? toHost(t.grad) : toHost(zeros(t.shape, { device: this.device }))))) };
    } finally {
      for (const t of [...saved.inputs, ...saved.outputs]) t.dispose();
      saved.cut?.dispose();
    }
  }

  /**
   * The last stage's backward from `loss` with data parallelism's all-reduce `buckets`: each
   * bucket's gradients are sent to the host (`emit`) as soon as they are all final, while the
   * backward goes on; buckets the graph does not reach are sent at the end.
   */
  private async backwardSendingBuckets(loss: Tensor, buckets: readonly string[][], emit: EmitPart): Promise<void> {
    const named = new Map(this.namedParameters());
    const bucketOf = new Map<Tensor, number>();
    const left = buckets.map((names, b) => {
      for (const name of names) {
        const p = named.get(name);
        if (!p) throw new Error(`${this.label}: no parameter '${name}' (all-reduce bucket ${b})`);
        bucketOf.set(p, b);
      }
      return new Set(names.map((n) => named.get(n)!));
    });
    const send = async (b: number) => {
      left[b]!.clear();
      const out: Record<string, HostTensor> = {};
      for (const name of buckets[b]!) {
        const g = named.get(name)!.grad;
        if (g) out[name] = await toHost(g);
      }
      emit({ bucket: b, grads: out });
    };
    // A finished bucket's read and send start at once, and the backward goes on after one turn of the
    // event loop (which lets them out): it does not wait for the read (a GPU readback) to complete.
    const sending: Promise<void>[] = [];
    await backwardAsync(loss, {
      onLeafGrad: (leaf) => {
        const b = bucketOf.get(leaf);
        if (b === undefined || !left[b]!.delete(leaf) || left[b]!.size > 0) return;
        sending.push(send(b));
        return new Promise((resolve) => setTimeout(resolve, 0));
      },
    });
    // Parameters the graph did not reach (their gradients, if any, come from earlier micro-batches).
    for (let b = 0; b < buckets.length; b++) if (left[b]!.size > 0) sending.push(send(b));
    await Promise.all(sending);
  }

  /** Accumulated gradients by name (parameters without one are left out). */
  private async gradients(args: { names?: string[] } | null): Promise<Record<string, HostTensor>> {
    const out: Record<string, HostTensor> = {};
    const wanted = args?.names ? new Set(args.names) : null;
    for (const [name, p] of this.namedParameters()) {
      if (wanted && !wanted.has(name)) continue;
      if (p.grad) out[name] = await toHost(p.grad);
    }
    return out;
  }

  private setGradients({ grads }: { grads: Record<string, HostTensor> }): null {
    const params = new Map(this.namedParameters());
    for (const [name, host] of Object.entries(grads)) {
      const p = params.get(name);
      if (!p) throw new Error(`${this.label}: no parameter ${name}`);
      p.grad?.dispose();
      p.grad = keep(fromHost(host, this.device));
    }
    return null;
  }

  private requireOptimizer(): AdamW {
    if (!this.optimizer) throw new Error(`${this.label}: no optimizer (call 'optimizer' first)`);
    return this.optimizer;
  }

  private step({ lrScale }: { lrScale?: number }): null {
    const optimizer = this.requireOptimizer();
    this.masters!.moveGradients();
    optimizer.step({ lrScale });
    this.masters!.copyBack();
    return null;
  }

  /** The f32 masters of the bf16 trained parameters (none for f32 weights), by name. */
  private async masterWeights(): Promise<Record<string, HostTensor>> {
    this.requireOptimizer();
    const out: Record<string, HostTensor> = {};
    for (const [name, m] of this.masters!.separate()) out[name] = await toHost(m);
    return out;
  }

  /** A resumed run's masters (a checkpoint's master_weights), each written into this worker's master. */
  private loadMasterWeights({ tensors }: { tensors: Record<string, HostTensor> }): number {
    this.requireOptimizer();
    const masters = new Map(this.masters!.separate());
    for (const [name, host] of Object.entries(tensors)) {
      const m = masters.get(name);
      if (!m) throw new Error(`${this.label}: no f32 master weight '${name}' (only bf16 trained parameters have one)`);
      if (!shapesEqual(m.shape, host.shape)) throw new Error(`${this.label}: master '${name}' is ${formatShape(m.shape)}, got ${formatShape(host.shape)}`);
      const t = fromHost(host, this.device);
      noGrad(() => tidy(() => copyInto(m, t.dtype === 'f32' ? t : cast(t, 'f32'))));
      t.dispose();
    }
    return Object.keys(tensors).length;
  }

  /** Tensors by name: `names`, or with `trained` the parameters training updates, else all. */
  private async weights(args: { names?: string[]; trained?: boolean } | null): Promise<Record<string, HostTensor>> {
    const out: Record<string, HostTensor> = {};
    if (args?.trained) {
      for (const [name, p] of this.trained()) out[name] = await toHost(p);
      return out;
    }
    const wanted = args?.names ? new Set(args.names) : null;
    for (const t of this.namedTensors()) if (!wanted || wanted.has(t.name)) out[t.name] = await toHost(t.tensor);
    return out;
  }

  /** Generation: the prompt of microbatch `mb` into a fresh cache holding this stage's layers. */
  private async prefill(
    req: StageBatch & { capacity: number; returnLogits?: boolean },
  ): Promise<{ hidden?: HostTensor; tokens?: number[]; logits?: HostTensor }> {
    const stage = this.stage;
    stage.eval();
    const plan = stage.plan;
    this.caches.get(req.mb)?.dispose();
    const result = noGrad(() =>
      tidy(() => {
        const { ids, hidden } = this.inputs(req, false);
        const first = ids ?? hidden!;
        const [batch, length] = first.shape as [number, number];
        const cache = new NemotronHybridCache(stage.config, { batch, device: this.device, capacity: req.capacity, layers: plan.layers });
        this.caches.set(req.mb, cache);
        const prepared = prepareInputs(stage.config, this.device, {
          ...(ids ? { inputIds: ids } : { inputsEmbeds: hidden! }),
          attentionMask: req.attentionMask ?? undefined,
        });
        const out = prefillPositions(cache, length, prepared.sequences.paddingMask, () =>
          stage.forwardLayers(ids ? stage.embed(ids) : hidden!, prepared.sequences, cache),
        );
        if (!plan.isLast) return { out, logits: null, tokens: null };
        const logits = stage.logits(narrow(stage.finalNorm(out), 1, length - 1, 1));
        return { out: null, logits, tokens: argmax(reshape(logits, [batch, stage.config.vocabSize]), -1) };
      }),
    );
    return this.reply(result);
  }

  /** {@link prefill} with the stage's routed experts held by its expert group (asked through the host at each MoE layer). */
  private async prefillCut(req: StageBatch & { capacity: number }, ask: Ask): Promise<GenerationReply> {
    const stage = this.stage;
    stage.eval();
    const plan = stage.plan;
    this.caches.get(req.mb)?.dispose();
    this.caches.delete(req.mb);
    const { ids, hidden } = this.inputs(req, false);
    const first = ids ?? hidden!;
    const [batch, length] = first.shape as [number, number];
    const sequences = this.prepare(req, first);
    const run = new ExpertCutRun(false);
    const temporaries = [ids, hidden, sequences.paddingMask, sequences.seqIdx];
    try {
      const cache = new NemotronHybridCache(stage.config, { batch, device: this.device, capacity: req.capacity, layers: plan.layers });
      this.caches.set(req.mb, cache);
      // prefillPositions, around an asynchronous fill.
      cache.reserve(length);
      cache.writeKeyMask(sequences.paddingMask, length);
      const h = ids ? noGrad(() => stage.embed(ids)) : hidden!;
      if (ids) run.adopt(h);
      const out = await run.forward(stage.model.layers.blocks, h, ask, (block, i, x) => {
        const entry = cache.layer(i);
        return block.forward(x, sequences, entry ? { entry, past: cache.length, keyMask: cache.keyMask } : undefined);
      });
      cache.advanceDevice(length);
      cache.advanceHost(length);
      if (!plan.isLast) return await this.reply({ out, logits: null, tokens: null });
      temporaries.push(out);
      const result = noGrad(() =>
        tidy(() => {
          const logits = stage.logits(narrow(stage.finalNorm(out), 1, length - 1, 1));
          return { out: null, logits, tokens: argmax(reshape(logits, [batch, stage.config.vocabSize]), -1) };
        }),
      );
      return await this.reply(result);
    } finally {
      run.dispose();
      for (const t of temporaries) t?.dispose();
    }
  }

  /** {@link decode} with the stage's routed experts held by its expert group. */
  private async decodeCut(req: DecodeRequest, ask: Ask): Promise<GenerationReply> {
    const stage = this.stage;
    stage.eval();
    const cache = this.caches.get(req.mb);
    if (!cache) throw new Error(`stage ${stage.plan.index}: no cache for microbatch ${req.mb} (prefill first)`);
    if (stage.plan.isFirst && (!req.ids || req.ids.length !== cache.batch)) throw new Error(`stage 0: decode takes one id per row (${cache.batch})`);
    const h = noGrad(() =>
      stage.plan.isFirst
        ? tidy(() => stage.embed(tensor(Int32Array.from(req.ids!), [cache.batch, 1], { device: this.device })))
        : fromHost(req.hidden!, this.device),
    );
    const run = new ExpertCutRun(false);
    run.adopt(h);
    let out: Tensor | null = null;
    try {
      // decodePosition, around an asynchronous step.
      cache.reserve(1);
      cache.advanceDevice(1);
      out = await run.forward(stage.model.layers.blocks, h, ask, (block, i, x) => {
        const entry = cache.layer(i);
        return block.decode(x, entry ? { entry, position: cache.position, keyMask: cache.keyMask } : null);
      });
      cache.advanceHost(1);
      if (!stage.plan.isLast) {
        const reply = this.reply({ out, logits: null, tokens: null });
        out = null;
        return await reply;
      }
      const o = out;
      const result = noGrad(() =>
        tidy(() => {
          const logits = stage.decodeLogits(o);
          return { out: null, logits, tokens: argmax(logits, -1) };
        }),
      );
      return await this.reply(result, req.returnLogits);
    } finally {
      run.dispose();
      if (out !== h) out?.dispose();
    }
  }

  /** Generation: one new token per row of microbatch `mb` (ids on the first stage, hidden states after). */
  private async decode(req: DecodeRequest): Promise<GenerationReply> {
    const stage = this.stage;
    stage.eval();
    const cache = this.caches.get(req.mb);
    if (!cache) throw new Error(`stage ${stage.plan.index}: no cache for microbatch ${req.mb} (prefill first)`);
    const result = noGrad(() =>
      tidy(() => {
        if (stage.plan.isFirst && (!req.ids || req.ids.length !== cache.batch)) throw new Error(`stage 0: decode takes one id per row (${cache.batch})`);
        const h = stage.plan.isFirst
          ? stage.embed(tensor(Int32Array.from(req.ids!), [cache.batch, 1], { device: this.device }))
          : fromHost(req.hidden!, this.device);
        const out = decodePosition(cache, () => stage.decodeLayers(h, cache));
        if (!stage.plan.isLast) return { out, logits: null, tokens: null };
        const logits = stage.decodeLogits(out);
        return { out: null, logits, tokens: argmax(logits, -1) };
      }),
    );
    return this.reply(result, req.returnLogits);
  }

  private async reply(
    result: { out: Tensor | null; logits: Tensor | null; tokens: Tensor | null },
    returnLogits = false,
  ): Promise<{ hidden?: HostTensor; tokens?: number[]; logits?: HostTensor }> {
    try {
      if (result.out) return { hidden: await toHost(result.out) };
      const tokens = Array.from(await result.tokens!.data(), Number);
      return returnLogits ? { tokens, logits: await toHost(result.logits!) } : { tokens };
    } finally {
      for (const t of [result.out, result.logits, result.tokens]) t?.dispose();
    }
  }

  dispose(): void {
    this.optimizer?.dispose();
    this.masters?.dispose();
    for (const c of this.caches.values()) c.dispose();
    for (const saved of this.saved.values()) {
      for (const t of [...saved.inputs, ...saved.outputs]) t.dispose();
      saved.cut?.dispose();
    }
    this.shards?.dispose();
    this.maybeStage?.dispose();
  }
}

/** The document of each position of a packed row. */
function documentOf(cuSeqlens: readonly number[], length: number): Int32Array {
  const doc = new Int32Array(length);
  for (let d = 0; d + 1 < cuSeqlens.length; d++) doc.fill(d, cuSeqlens[d]!, cuSeqlens[d + 1]!);
  return doc;
}

/** MTP depth targets (core's rule): labels[t + ahead], -100 past the row or in another packed document. */
function mtpTargets(labels: Rows, ahead: number, documents: Int32Array | null): number[][] {
  return labels.map((row) =>
    row.map((_, t) => {
      const from = t + ahead;
      if (from >= row.length || (documents && documents[from] !== documents[t])) return IGNORE_INDEX;
      return row[from]!;
    }),
  );
}
