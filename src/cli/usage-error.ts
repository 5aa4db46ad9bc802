/** A mistake in the command line: printed as one line, exit status 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** A command that could not do its job for a reason outside the command line: one line, exit status 1. */
export class CommandFailed extends Error {
  override name = 'CommandFailed';
}
