/**
 * A step that runs many times with the same kernels and parameters (a decode step), replayed from a
 * recording on WebGPU. The step function must communicate only through tensors that exist before
 * it (reading inputs and writing results in place, e.g. with `copyInto` or in-place ops), and
 * everything that differs between runs — token ids, positions, counters — must live in such device
 * tensors: the recording fixes every kernel parameter.
 *
 * On WebGPU the first `run()` calls the step directly (compiling its kernels and building any
 * resources ops cache, such as packed weights); the second records it and replays the recording, as
 * does every later run. A step that turns out not to be recordable (it uploads, reads back or copies,
 * e.g. an op path that packs its operands per call) is called directly on every run instead: slower,
 * still right. On the CPU backend every run calls the step.
 */
import type { Device } from './device/device';
import type { DeviceRecording } from './device/webgpu-device';
import { RecordingRefusedError } from './runtime/recording';
import { tidy } from './runtime/scope';

export class StepProgram {
  private runs = 0;
  private recording: DeviceRecording | null = null;
  private recordable = true;
  private disposed = false;

  constructor(
    readonly device: Device,
    private readonly step: () => void,
  ) {}

  /** Dispatches one replay encodes (0 before the recording exists, and on the CPU backend). */
  get recordedDispatches(): number {
    return this.recording?.prepared.length ?? 0;
  }

  /** False once recording the step was refused (it is then called on every run). */
  get isRecordable(): boolean {
    return this.recordable;
  }

  /** Runs the step once (recorded work is encoded, not waited for). */
  run(): void {
    if (this.disposed) throw new Error('StepProgram.run: the program was disposed');
    const device = this.device;
    if (device.kind === 'cpu' || this.runs === 0 || !this.recordable) {
      this.runs++;
      tidy(() => this.step());
      return;
    }
    if (!this.recording) {
      try {
        this.recording = device.record(() => tidy(() => this.step()));
      } catch (e) {
        if (!(e instanceof RecordingRefusedError)) throw e;
        // Nothing ran while recording: run the step directly, now and from now on.
        this.recordable = false;
        this.runs++;
        tidy(() => this.step());
        return;
      }
    }
    this.runs++;
    device.replay(this.recording);
  }

  /** Frees the recording's buffers. The tensors the step reads and writes stay the caller's. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    if (this.recording && this.device.kind === 'webgpu') this.device.releaseRecording(this.recording);
    this.recording = null;
  }
}
