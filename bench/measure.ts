/**
 * Runs a child process and measures it: wall time and peak resident memory.
 *
 * Peak RSS comes from the kernel's own high-water mark. With GNU time (`/usr/bin/time -f %M`) it is the
 * child's `ru_maxrss` as reported by wait4() — exact, including the last moments before exit. Without GNU
 * time, /proc/<pid>/status is polled every 20 ms and the last `VmHWM` seen is kept (it can miss a peak in
 * the final 20 ms). Either way the polling also records an RSS timeline, so a report can say whether
 * memory stayed flat or grew with the work.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const GNU_TIME = '/usr/bin/time';
const POLL_MS = 20;
const TIMELINE_MS = 500;
const TAIL_CHARS = 64 * 1024;

export interface RssSample {
  readonly atMs: number;
  readonly rssBytes: number;
}

export interface MeasuredRun {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly timedOut: boolean;
  readonly wallMs: number;
  /** Peak resident set size of the measured process, bytes. */
  readonly peakRssBytes: number | undefined;
  readonly peakRssSource: 'getrusage' | 'VmHWM polling' | 'none';
  /** CPU time of the measured process (user + system, seconds; GNU time's %U + %S), when known. */
  readonly cpuSeconds: number | undefined;
  /** The highest VmHWM seen by polling (a cross-check of peakRssBytes). */
  readonly polledPeakRssBytes: number | undefined;
  /** RSS every ~500 ms. */
  readonly timeline: readonly RssSample[];
  readonly stdout: string;
  /** The last 64 KiB of stderr. */
  readonly stderrTail: string;
  /** The last stdout line parsed as JSON, if it is JSON. */
  readonly summary: Record<string, unknown> | undefined;
}

export interface MeasureOptions {
  readonly env: Record<string, string>;
  readonly timeoutMs: number;
  readonly cwd?: string;
}

/** The parent's environment without anything that would configure the child behind our back. */
export function cleanEnvironment(): Record<string, string> {
  const clean: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value === undefined) continue;
    if (key.startsWith('SLOTLAKE_') || key.startsWith('AWS_') || key.startsWith('PG')) continue;
    if (key === 'DATABASE_URL' || key === 'NODE_OPTIONS' || key.startsWith('npm_')) continue;
    clean[key] = value;
  }
  return clean;
}

function readStatus(pid: number): { rss: number; hwm: number } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/status`, 'utf8');
    const rss = /^VmRSS:\s+(\d+) kB/m.exec(text);
    const hwm = /^VmHWM:\s+(\d+) kB/m.exec(text);
    if (!rss || !hwm) return undefined;
    return { rss: Number(rss[1]) * 1024, hwm: Number(hwm[1]) * 1024 };
  } catch {
    return undefined;
  }
}

/** The (first) child of `pid`: the measured program when GNU time wraps it. */
function childOf(pid: number): number | undefined {
  try {
    const first = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/)[0];
    return first ? Number(first) : undefined;
  } catch {
    return undefined;
  }
}

export function hasGnuTime(): boolean {
  return existsSync(GNU_TIME);
}

export function runMeasured(
  file: string,
  args: readonly string[],
  options: MeasureOptions,
): Promise<MeasuredRun> {
  const useTime = hasGnuTime();
  const scratch = mkdtempSync(join(tmpdir(), 'slotlake-bench-time-'));
  const timeFile = join(scratch, 'maxrss');
  const [command, commandArgs] = useTime
    ? [GNU_TIME, ['-f', '%M %U %S', '-o', timeFile, file, ...args]]
    : [file, [...args]];
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(command, commandArgs, {
      env: options.env,
      cwd: options.cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderrTail = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => {
      stderrTail += chunk.toString();
      if (stderrTail.length > 2 * TAIL_CHARS) stderrTail = stderrTail.slice(-TAIL_CHARS);
    });

    let measuredPid: number | undefined = useTime ? undefined : child.pid;
    let polledPeak: number | undefined;
    const timeline: RssSample[] = [];
    let lastTimelineMs = -TIMELINE_MS;
    const poll = setInterval(() => {
      if (measuredPid === undefined && child.pid !== undefined) measuredPid = childOf(child.pid);
      if (measuredPid === undefined) return;
      const status = readStatus(measuredPid);
      if (!status) return;
      polledPeak = Math.max(polledPeak ?? 0, status.hwm);
      const atMs = performance.now() - started;
      if (atMs - lastTimelineMs >= TIMELINE_MS) {
        lastTimelineMs = atMs;
        timeline.push({ atMs: Math.round(atMs), rssBytes: status.rss });
      }
    }, POLL_MS);

    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      // The measured program first (GNU time does not forward signals), then the wrapper.
      if (measuredPid !== undefined && measuredPid !== child.pid) {
        try {
          process.kill(measuredPid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      child.kill('SIGKILL');
    }, options.timeoutMs);

    child.on('error', (error) => {
      clearInterval(poll);
      clearTimeout(timer);
      rmSync(scratch, { recursive: true, force: true });
      reject(error);
    });
    child.on('close', (code, signal) => {
      const wallMs = performance.now() - started;
      clearInterval(poll);
      clearTimeout(timer);
      let peakRssBytes: number | undefined;
      let peakRssSource: MeasuredRun['peakRssSource'] = 'none';
      let cpuSeconds: number | undefined;
      if (useTime && existsSync(timeFile)) {
        // GNU time writes "Command exited with non-zero status N" before the format on failure.
        const lines = readFileSync(timeFile, 'utf8').trim().split('\n');
        const [kb, user, system] = lines[lines.length - 1]!.trim().split(/\s+/).map(Number);
        if (kb !== undefined && Number.isFinite(kb) && kb > 0) {
          peakRssBytes = kb * 1024;
          peakRssSource = 'getrusage';
        }
        if (user !== undefined && system !== undefined && Number.isFinite(user + system))
          cpuSeconds = user + system;
      }
      if (peakRssBytes === undefined && polledPeak !== undefined) {
        peakRssBytes = polledPeak;
        peakRssSource = 'VmHWM polling';
      }
      rmSync(scratch, { recursive: true, force: true });
      const lines = stdout.trim().split('\n').filter(Boolean);
      let summary: Record<string, unknown> | undefined;
      try {
        const last = lines[lines.length - 1];
        summary = last === undefined ? undefined : (JSON.parse(last) as Record<string, unknown>);
      } catch {
        summary = undefined;
      }
      resolve({
        code,
        signal,
        timedOut,
        wallMs,
        peakRssBytes,
        peakRssSource,
        cpuSeconds,
        polledPeakRssBytes: polledPeak,
        timeline,
        stdout,
        stderrTail: stderrTail.slice(-TAIL_CHARS),
        summary,
      });
    });
  });
}
