/** Errors raised by the hub package; each message names the file (or repository) and the field at fault. */

/** A checkpoint, config or tokenizer file whose content is malformed. */
export class CheckpointFormatError extends Error {
  override readonly name = 'CheckpointFormatError';

  constructor(
    /** The file at fault (path or display name). */
    readonly file: string,
    /** The field, tensor or key at fault, when there is one. */
    readonly field: string | undefined,
    detail: string,
  ) {
    super(`${file}${field === undefined ? '' : `: ${field}`}: ${detail}`);
  }
}

/** A repository, revision or file that could not be resolved or downloaded. */
export class HubError extends Error {
  override readonly name = 'HubError';

  constructor(
    message: string,
    /** The HTTP status the Hub answered with, when the failure came from an HTTP answer. */
    readonly status?: number,
  ) {
    super(message);
  }
}
