/**
 * @packageDocumentation
 * nemotron-ts: Nemotron-H hybrid language models in TypeScript on WebGPU. The root package
 * re-exports the workspace packages; the model factory lands with the forward pass.
 */
export * as kernels from '@nemotron-ts/kernels';
