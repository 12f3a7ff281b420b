/**
 * A step that runs many times with the same kernels and parameters (a decode step), replayed from a
 * recording on WebGPU. The step function must communicate only through tensors that exist before
 * it (reading inputs and writing results in place, e.g. with `copyInto` or in-place ops), and
 * everything that differs between runs — token ids, positions, counters — must live in such device
 * tensors: the recording fixes every kernel parameter.
 *
 * On WebGPU the first `run()` calls the step directly (compiling its kernels and building any
 * resources ops cache, such as packed weights); the second records it and replays the recording, as
 * does every later run. On the CPU backend every run calls the step.
 */
import type { Device } from './device/device';
import type { DeviceRecording } from './device/webgpu-device';
import { tidy } from './runtime/scope';

export class StepProgram {
  private runs = 0;
  private recording: DeviceRecording | null = null;
  private disposed = false;

  constructor(
    readonly device: Device,
    private readonly step: () => void,
  ) {}

  /** Dispatches one replay encodes (0 before the recording exists, and on the CPU backend). */
  get recordedDispatches(): number {
    return this.recording?.prepared.length ?? 0;
  }

  /** Runs the step once (recorded work is encoded, not waited for). */
  run(): void {
    if (this.disposed) throw new Error('StepProgram.run: the program was disposed');
    const device = this.device;
    if (device.kind === 'cpu' || this.runs === 0) {
      this.runs++;
      tidy(() => this.step());
      return;
    }
    if (!this.recording) this.recording = device.record(() => tidy(() => this.step()));
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
