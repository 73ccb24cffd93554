/**
 * Kill points: a testing hook that makes the process SIGKILL itself at a named step of a run, so the fault
 * tests can prove that a crash at any step loses and duplicates nothing. Armed only by
 * `SLOTLAKE_KILL_AT=<point>[:<occurrence>]` (e.g. `after-manifest:2`, the second time that step is reached);
 * unarmed, `killPoint()` is a single comparison.
 */

export const KILL_POINTS = [
  'after-lease', // lease acquired, nothing else done
  'mid-recovery', // recovery deleted one object of an uncommitted batch
  'after-intent', // the batch's keys recorded, before its uploads
  'mid-upload', // the first object of a batch uploaded, others not
  'after-upload', // every object uploaded, before the checkpoint
  'after-checkpoint', // checkpoint written (manifest pending), before the manifest upload
  'after-manifest', // manifest written, before the acknowledgement
  'after-ack', // acknowledged
  'mid-transaction', // while reading, inside a transaction with changes already in the batch
  'snapshot-read', // a snapshot chunk read and its high watermark written, before the stream reached it
  'snapshot-written', // a snapshot chunk's rows written into the batch, before it commits
] as const;

export type KillPoint = (typeof KILL_POINTS)[number];

/** The kill points of the change stream's commit path (the snapshot ones are reached only by snapshot runs). */
export const STREAM_KILL_POINTS: readonly KillPoint[] = KILL_POINTS.filter(
  (point) => !point.startsWith('snapshot-'),
);

let armed: { point: KillPoint; occurrence: number } | undefined;
let seen = 0;

export function parseKillSpec(spec: string): { point: KillPoint; occurrence: number } {
  const [point, count] = spec.split(':');
  if (!KILL_POINTS.includes(point as KillPoint)) {
    throw new Error(`unknown kill point ${JSON.stringify(point)}; one of ${KILL_POINTS.join(', ')}`);
  }
  const occurrence = count === undefined ? 1 : Number(count);
  if (!Number.isInteger(occurrence) || occurrence < 1)
    throw new Error(`bad occurrence in ${JSON.stringify(spec)}`);
  return { point: point as KillPoint, occurrence };
}

export function armKillPoint(spec: { point: KillPoint; occurrence: number } | undefined): void {
  armed = spec;
  seen = 0;
}

export function killPoint(point: KillPoint): void {
  if (armed === undefined || armed.point !== point) return;
  if (++seen < armed.occurrence) return;
  process.stderr.write(`slotlake: kill point ${point} reached: SIGKILL\n`);
  process.kill(process.pid, 'SIGKILL');
}
