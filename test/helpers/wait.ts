/** Waiting on a condition in tests: polled, always bounded, failing with what was awaited. */

export interface WaitOptions {
  /** Fail after this long (default 30 s). */
  readonly withinMs?: number;
  /** Between checks (default 100 ms). */
  readonly everyMs?: number;
}

/** Resolves once `condition` holds (it may be async); throws when it did not within `withinMs`. */
export async function waitFor(
  what: string,
  condition: () => boolean | Promise<boolean>,
  options: WaitOptions = {},
): Promise<void> {
  const withinMs = options.withinMs ?? 30_000;
  const everyMs = options.everyMs ?? 100;
  const started = performance.now();
  for (;;) {
    if (await condition()) return;
    if (performance.now() - started > withinMs)
      throw new Error(`timed out after ${withinMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}
