/** @packageDocumentation @nemotron-ts/parallel (in progress). */
export {};
