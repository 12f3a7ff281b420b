/**
 * The token id `sampleTokens` gives a row whose logits hold NaN or ±Infinity: never a real id, so
 * whoever reads the tokens back can name the row and step instead of continuing from garbage
 * (embedding it yields NaN rows, never an out-of-range read).
 */
export const NON_FINITE_TOKEN = -1;
