/** @packageDocumentation @nemotron-ts/core (in progress). */
export {};
