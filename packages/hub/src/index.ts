/** @packageDocumentation @nemotron-ts/hub (in progress). */
export {};
