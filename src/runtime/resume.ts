/**
 * Where a run resumes: the checkpoint, checked against the source it was made on and against the slot. Pure.
 *
 * LSNs are positions in one database cluster's WAL: the checkpoint means something only on the system it was
 * made on (`IDENTIFY_SYSTEM`'s system identifier — the same on a physical standby promoted by a failover, on a
 * new timeline) and for the same database. So:
 * - no checkpoint yet: start at the slot's confirmed position;
 * - a checkpoint from another system or database (a restored or new server behind the same settings): its LSNs
 *   are meaningless here — skipping "archived" transactions or reading from its position would silently lose
 *   or repeat changes — so the run fails naming both sources, unless the operator accepts the gap
 *   (`SLOTLAKE_ON_SOURCE_CHANGE=accept-gap`): then it starts at the new slot's position;
 * - the same system: a slot behind the checkpoint (a crash lost the last `confirmed_flush`, or a failover slot
 *   synced a little late) is fine — the archived transactions are skipped — and logged at warn with both
 *   positions; a slot ahead of it means changes the archive never saw: a failure naming both positions,
 *   unless `SLOTLAKE_SLOT_POSITION_POLICY=trust-slot`.
 * https://www.postgresql.org/docs/current/protocol-replication.html (IDENTIFY_SYSTEM)
 */
import type { Checkpoint, SourceIdentity } from '../checkpoint/store.js';
import { SlotlakeError } from '../errors.js';
import { formatLsn, ZERO_LSN, type Lsn } from '../lsn.js';
import type { ResumePosition } from '../pipeline/assembler.js';

export interface SlotPosition {
  readonly name: string;
  readonly confirmedFlushLsn: Lsn | null;
  readonly restartLsn: Lsn | null;
}

export interface ResumePolicies {
  readonly slotPositionPolicy: 'fail' | 'trust-slot';
  readonly onSourceChange: 'fail' | 'accept-gap' | 'resnapshot';
}

export interface ResumeNote {
  readonly level: 'info' | 'warn';
  readonly message: string;
  readonly fields: Record<string, unknown>;
}

export interface ResumeDecision {
  readonly position: ResumePosition;
  /** The identity every checkpoint of this run is written with. */
  readonly source: SourceIdentity;
  /** True when the stored checkpoint belongs to another source and the run accepted the gap. */
  readonly sourceChanged: boolean;
  /** What to log, in order. */
  readonly notes: readonly ResumeNote[];
}

function describeSource(source: SourceIdentity): string {
  return `system ${source.systemId} database "${source.database}"`;
}

export function decideResume(
  checkpoint: Checkpoint | null,
  slot: SlotPosition,
  current: SourceIdentity,
  policies: ResumePolicies,
): ResumeDecision {
  const notes: ResumeNote[] = [];
  const slotPosition = slot.confirmedFlushLsn ?? slot.restartLsn ?? ZERO_LSN;
  if (!checkpoint) {
    notes.push({
      level: 'info',
      message: 'no checkpoint yet: starting at the slot position',
      fields: { slotPosition: formatLsn(slotPosition) },
    });
    return {
      position: { lsn: slotPosition, partial: undefined },
      source: current,
      sourceChanged: false,
      notes,
    };
  }
  const stored = checkpoint.source;
  if (stored && (stored.systemId !== current.systemId || stored.database !== current.database)) {
    const message =
      `the checkpoint ${formatLsn(checkpoint.lsn)} was made on ${describeSource(stored)}, but this run is connected to ` +
      `${describeSource(current)}: its positions mean nothing here`;
    if (policies.onSourceChange === 'fail') {
      throw new SlotlakeError(message, {
        kind: 'source-changed',
        origin: 'source',
        hint:
          'if this is the right database (a restore or a new server), set SLOTLAKE_ON_SOURCE_CHANGE=resnapshot (start at the new slot and re-snapshot every table into the archive) ' +
          'or SLOTLAKE_ON_SOURCE_CHANGE=accept-gap (start at the new slot, knowingly missing what happened in between); otherwise fix DATABASE_URL or SLOTLAKE_PIPELINE',
      });
    }
    notes.push({
      level: 'warn',
      message: `${message}; continuing from the new slot position because SLOTLAKE_ON_SOURCE_CHANGE=${policies.onSourceChange}`,
      fields: { previousSource: stored, source: current, slotPosition: formatLsn(slotPosition) },
    });
    return {
      position: { lsn: slotPosition, partial: undefined },
      source: current,
      sourceChanged: true,
      notes,
    };
  }
  if (!stored) {
    notes.push({
      level: 'info',
      message:
        'the checkpoint carries no source identity yet (written by an older version): adopting this source',
      fields: { source: current },
    });
  } else if (stored.timeline !== current.timeline) {
    notes.push({
      level: 'warn',
      message:
        'the source moved to a new timeline (a failover or a promotion): same system, resuming from the checkpoint',
      fields: { previousTimeline: stored.timeline, timeline: current.timeline },
    });
  }
  if (stored && stored.slot !== current.slot) {
    notes.push({
      level: 'warn',
      message:
        'the pipeline now reads another slot of the same database; its position is checked against the checkpoint',
      fields: { previousSlot: stored.slot, slot: current.slot },
    });
  }
  if (slotPosition <= checkpoint.lsn) {
    if (slotPosition < checkpoint.lsn) {
      notes.push({
        level: 'warn',
        message:
          'the slot is behind the checkpoint (its last acknowledgement was lost, or it was synced late): the archived transactions it resends are skipped',
        fields: { slotPosition: formatLsn(slotPosition), checkpoint: formatLsn(checkpoint.lsn) },
      });
    }
    return {
      position: { lsn: checkpoint.lsn, partial: checkpoint.partial },
      source: current,
      sourceChanged: false,
      notes,
    };
  }
  const message =
    `the slot "${slot.name}" is at ${formatLsn(slotPosition)}, ahead of the checkpoint ${formatLsn(checkpoint.lsn)}: ` +
    `the changes between them were consumed by something else (or the slot was recreated) and are not in the archive`;
  if (policies.slotPositionPolicy === 'fail') {
    throw new SlotlakeError(message, {
      kind: 'slot-ahead',
      origin: 'source',
      hint:
        'find what consumed the slot; to accept the gap knowingly, run once with SLOTLAKE_SLOT_POSITION_POLICY=trust-slot, ' +
        'or re-snapshot the tables into the archive',
    });
  }
  notes.push({
    level: 'warn',
    message: `${message}; continuing from the slot because SLOTLAKE_SLOT_POSITION_POLICY=trust-slot`,
    fields: { slotPosition: formatLsn(slotPosition), checkpoint: formatLsn(checkpoint.lsn) },
  });
  const partial =
    checkpoint.partial && checkpoint.partial.commitLsn >= slotPosition ? checkpoint.partial : undefined;
  return { position: { lsn: slotPosition, partial }, source: current, sourceChanged: false, notes };
}
