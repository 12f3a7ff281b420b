/**
 * A stage's layers with their MoE layers' routed experts held elsewhere (expert parallelism inside
 * a pipeline stage or a replica). The layers run here; at each MoE layer the stage routes its
 * tokens and asks the host for the routed experts' output (the host dispatches the rows to the
 * stage's expert group and combines them), then goes on. In training the graph is cut at each MoE
 * layer (its input, residual and shared-expert output become leaves) and {@link ExpertCutRun.backwardCuts}
 * runs the backward segment by segment from the last cut down, asking the host for the experts'
 * backward at each.
 *
 * {@link HostExchange} turns such a run into requests: the host's call that starts it is answered
 * with the first question (or the result), each `resume` call with the next one.
 */
import { add, backward, detach, keep, mul, noGrad, reshape, sum, tensor, tidy, type Tensor } from '@nemotron-ts/kernels';
import { MoE, type NemotronHBlock } from '@nemotron-ts/core';
import { HostTensor, toHost } from './host-tensor';
import { reportProgress } from './progress';

/** What a stage asks the host for. */
export type ExpertQuestion =
  | { readonly kind: 'experts'; readonly layer: number; readonly indices: HostTensor; readonly weights: HostTensor; readonly x: HostTensor }
  | { readonly kind: 'expertsBackward'; readonly layer: number; readonly grad: HostTensor };

/** The host's answers: the combined routed output [T, Hx], or the gradients of the routed rows and routing weights. */
export type ExpertAnswer = { readonly out: HostTensor } | { readonly x: HostTensor; readonly weights: HostTensor };

/** A stage's reply while a run is under way: a question, or the run's result. */
export type ExchangeStep<T> = { readonly ask: ExpertQuestion } | { readonly done: T };

export type Ask = (question: ExpertQuestion) => Promise<ExpertAnswer>;

interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(v: T): void;
  reject(e: unknown): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** One run at a time that asks the host questions between requests. */
export class HostExchange {
  private next: Deferred<ExchangeStep<unknown>> | null = null;
  private answer: Deferred<ExpertAnswer> | null = null;

  /** Starts `run`; settles with its first question or its result. */
  start<T>(run: (ask: Ask) => Promise<T>): Promise<ExchangeStep<T>> {
    if (this.next || this.answer) throw new Error('a run is already waiting for the host (resume it first)');
    const next = deferred<ExchangeStep<unknown>>();
    this.next = next;
    run((q) => this.ask(q)).then(
      (done) => this.settle((d) => d.resolve({ done })),
      (e) => this.settle((d) => d.reject(e)),
    );
    return next.promise as Promise<ExchangeStep<T>>;
  }

  /** The host's answer to the pending question; settles with the next question or the result. */
  resume(answer: ExpertAnswer): Promise<ExchangeStep<unknown>> {
    const pending = this.answer;
    if (!pending) throw new Error('resume: no run is waiting for an answer');
    this.answer = null;
    const next = deferred<ExchangeStep<unknown>>();
    this.next = next;
    pending.resolve(answer);
    return next.promise;
  }

  /**
   * The host gave up on the pending question (its dispatch failed): the run fails with `reason`
   * and frees what it holds. Settles when it has; nothing to do when no run waits.
   */
  async abandon(reason: string): Promise<null> {
    const pending = this.answer;
    if (!pending) return null;
    this.answer = null;
    const next = deferred<ExchangeStep<unknown>>();
    this.next = next;
    pending.reject(new Error(reason));
    await next.promise.catch(() => undefined);
    return null;
  }

  private ask(question: ExpertQuestion): Promise<ExpertAnswer> {
    const answer = deferred<ExpertAnswer>();
    this.answer = answer;
    this.settle((d) => d.resolve({ ask: question }));
    return answer.promise;
  }

  private settle(how: (d: Deferred<ExchangeStep<unknown>>) => void): void {
    const d = this.next;
    this.next = null;
    if (d) how(d);
  }
}

interface Cut {
  readonly layer: number;
  /** The tensor that fed the MoE block (the previous segment's end). */
  readonly before: Tensor;
  readonly hIn: Tensor;
  readonly hRes: Tensor;
  readonly S: Tensor;
  readonly R: Tensor;
  readonly routedIn: Tensor;
  readonly weights: Tensor;
  readonly shared: Tensor;
}

/** A forward through blocks whose MoE layers ask for their routed experts; in training it keeps the cuts for {@link backwardCuts}. */
export class ExpertCutRun {
  private readonly cuts: Cut[] = [];
  /** Intermediate outputs this run keeps alive (freed by dispose). */
  private readonly owned: Tensor[] = [];

  constructor(private readonly train: boolean) {}

  /** Frees `t` with the run (a tensor the backward still starts from, e.g. the embeddings' output). */
  adopt(t: Tensor): void {
    this.owned.push(t);
  }

  /**
   * h [B, L, H] through the blocks; the result is the caller's (and outlives dispose). Blocks
   * other than MoE run `runBlock` (a forward, a cached prefill or a decode step).
   */
  async forward(
    blocks: ReadonlyMap<number, NemotronHBlock>,
    h: Tensor,
    ask: Ask,
    runBlock: (block: NemotronHBlock, index: number, x: Tensor) => Tensor,
  ): Promise<Tensor> {
    const train = this.train;
    const graph = <T>(f: () => T): T => (train ? f() : noGrad(f));
    const leaf = (t: Tensor) => keep(detach(t)).requiresGrad_(true);
    let x = h;
    const advance = (next: Tensor) => {
      // Segment ends are kept for the backward; other intermediates can go (the graph holds what it needs).
      if (x !== h && !this.cuts.some((c) => c.before === x)) x.dispose();
      x = next;
    };
    for (const [i, block] of blocks) {
      const moe = block.mixer;
      if (!(moe instanceof MoE)) {
        const input = x;
        advance(keep(graph(() => tidy(() => runBlock(block, i, input)))));
        reportProgress();
        continue;
      }
      const before = x;
      const hIn = train ? leaf(before) : before;
      const H = hIn.shape.at(-1)!;
      const pre = graph(() =>
        tidy(() => {
          const tokens = reshape(block.norm.forward(hIn), [-1, H]);
          const routing = moe.gate.forward(tokens);
          return {
            indices: routing.indices,
            weights: routing.weights,
            routedIn: moe.fc1LatentProj ? moe.fc1LatentProj.forward(tokens) : tokens,
            shared: moe.sharedExperts.forward(tokens),
          };
        }),
      );
      for (const t of [pre.indices, pre.weights, pre.routedIn, pre.shared]) keep(t);
      const [indices, weights, routedIn] = await Promise.all([toHost(pre.indices), toHost(pre.weights), toHost(pre.routedIn)]);
      pre.indices.dispose();
      const answer = await ask({ kind: 'experts', layer: i, indices, weights, x: routedIn });
      if (!('out' in answer)) throw new Error(`layer ${i}: expected the routed experts' output`);
      const device = hIn.device;
      const R = keep(tensor(answer.out.toFloat32(), routedIn.shape, { device })).requiresGrad_(train);
      const S = train ? leaf(pre.shared) : pre.shared;
      const hRes = train ? leaf(hIn) : hIn;
      const out = keep(graph(() => tidy(() => add(hRes, reshape(add(moe.fc2LatentProj ? moe.fc2LatentProj.forward(R) : R, S), hRes.shape)))));
      if (train) {
        this.cuts.push({ layer: i, before, hIn, hRes, S, R, routedIn: pre.routedIn, weights: pre.weights, shared: pre.shared });
        x = out;
      } else {
        for (const t of [R, pre.weights, pre.routedIn, pre.shared]) t.dispose();
        advance(out);
      }
      reportProgress();
    }
    if (x === h) return h;
    // The caller owns the result; segment ends stay in the cuts.
    this.owned.push(...this.cuts.map((c) => c.before).filter((t) => t !== h));
    return x;
  }

  /**
   * After the backward of the run's output: the rest of the backward, one cut at a time from the
   * last — the experts' backward through the host, then the MoE block's own part, then the
   * previous segment — until the run's input has its gradient.
   */
  async backwardCuts(ask: Ask): Promise<void> {
    const dot = (a: Tensor, b: Tensor) => sum(reshape(mul(a, b), [-1]), 0);
    for (let j = this.cuts.length - 1; j >= 0; j--) {
      const m = this.cuts[j]!;
      const device = m.R.device;
      const grad = m.R.grad ? await toHost(m.R.grad) : HostTensor.fromF32(new Float32Array(m.R.size), m.R.shape);
      const answer = await ask({ kind: 'expertsBackward', layer: m.layer, grad });
      if (!('weights' in answer)) throw new Error(`layer ${m.layer}: expected the experts' backward`);
      const gx = tensor(answer.x.toFloat32(), answer.x.shape, { device });
      const gw = tensor(answer.weights.toFloat32(), answer.weights.shape, { device });
      // One pass through the layer's pre-expert graph: Σ output ⊙ its gradient, for each output.
      const seedSum = tidy(() => {
        const routed = add(dot(m.routedIn, gx), dot(m.weights, gw));
        return m.S.grad ? add(routed, dot(m.shared, m.S.grad)) : routed;
      });
      gx.dispose();
      gw.dispose();
      if (seedSum.requiresGrad) backward(seedSum);
      seedSum.dispose();
      const down = noGrad(() => (m.hIn.grad && m.hRes.grad ? add(m.hIn.grad, m.hRes.grad) : (m.hIn.grad ?? m.hRes.grad)?.share()));
      if (down && m.before.requiresGrad) backward(m.before, { grad: down });
      down?.dispose();
      reportProgress();
    }
  }

  dispose(): void {
    for (const m of this.cuts) for (const t of [m.hIn, m.hRes, m.S, m.R, m.routedIn, m.weights, m.shared]) t.dispose();
    this.cuts.length = 0;
    for (const t of this.owned) t.dispose();
    this.owned.length = 0;
  }
}
