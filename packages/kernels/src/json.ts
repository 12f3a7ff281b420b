/**
 * The JSON value types shared by the packages above (hub parses and writes config files, core
 * types the model config with them); here because kernels is the one package both depend on.
 */

/** A parsed JSON value; numbers may be ±Infinity or NaN (Python's json writes them as bare tokens). */
export type JsonValue = null | boolean | number | string | JsonValue[] | JsonObject;
/** A parsed JSON object. */
export interface JsonObject {
  [key: string]: JsonValue;
}
