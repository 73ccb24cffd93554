/**
 * infra/Dockerfile, read as text (no container engine here to build it): multi-stage on Node 22, the
 * runtime stage gets production dependencies only (`npm ci --omit=dev`) and the compiled code, runs as a
 * non-root user, bakes in no setting or secret, and starts `slotlake run`; every file it copies exists
 * and the build context leaves out what the image must not carry.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

interface Instruction {
  readonly keyword: string;
  readonly args: string;
}
interface Stage {
  readonly base: string;
  readonly name: string | undefined;
  readonly instructions: Instruction[];
}

/** Instructions with line continuations joined and comments dropped, grouped by stage. */
function parseDockerfile(text: string): { args: Map<string, string>; stages: Stage[] } {
  const logical = text
    .replace(/\\\r?\n/g, ' ')
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
  const args = new Map<string, string>();
  const stages: Stage[] = [];
  for (const line of logical) {
    const [, keyword = '', rest = ''] = /^(\S+)\s*(.*)$/.exec(line) ?? [];
    const upper = keyword.toUpperCase();
    if (upper === 'FROM') {
      const [, base = '', name] = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(rest) ?? [];
      stages.push({
        base: base.replace(/\$\{(\w+)\}/g, (_, arg: string) => args.get(arg) ?? ''),
        name,
        instructions: [],
      });
    } else if (upper === 'ARG' && stages.length === 0) {
      const [name = '', value = ''] = rest.split('=');
      args.set(name, value);
    } else {
      assert.ok(stages.length > 0, `${keyword} before the first FROM`);
      stages.at(-1)!.instructions.push({ keyword: upper, args: rest });
    }
  }
  return { args, stages };
}

describe('infra/Dockerfile', () => {
  const { stages } = parseDockerfile(readFileSync(join(ROOT, 'infra', 'Dockerfile'), 'utf8'));
  const runtime = stages.at(-1)!;
  const stage = (name: string) => stages.find((s) => s.name === name);

  it('builds in stages on Node 22', () => {
    assert.ok(stages.length >= 2, 'multi-stage');
    for (const s of stages)
      assert.match(s.base, /^node:22(\.|-|$)/, `stage ${s.name} is on Node 22 (${s.base})`);
    assert.ok(
      stage('build')?.instructions.some(
        (i) => i.keyword === 'RUN' && /tsc -p tsconfig\.build\.json/.test(i.args),
      ),
      'the build stage compiles',
    );
    assert.ok(
      stage('build')?.instructions.some(
        (i) => i.keyword === 'RUN' && /node scripts\/bundle\.mjs/.test(i.args),
      ),
      'the build stage bundles the CLI (bin/slotlake.js runs dist/bundle/cli.mjs)',
    );
  });

  it('gives the runtime production dependencies only, and the compiled code', () => {
    const copies = runtime.instructions.filter((i) => i.keyword === 'COPY');
    const nodeModules = copies.find((i) => /\/app\/node_modules/.test(i.args));
    assert.ok(nodeModules, 'node_modules is copied in');
    const from = /--from=(\S+)/.exec(nodeModules.args)?.[1];
    assert.ok(from && from !== 'build', 'from a stage other than the build');
    const source = stage(from);
    assert.ok(
      source?.instructions.some((i) => i.keyword === 'RUN' && /npm ci\b.*--omit=dev/.test(i.args)),
      `stage ${from} installs with npm ci --omit=dev`,
    );
    assert.ok(
      copies.some((i) => /--from=build\s+\/app\/dist/.test(i.args)),
      'dist from the build stage',
    );
    assert.ok(!copies.some((i) => /\bsrc\b/.test(i.args)), 'no TypeScript sources in the runtime');
    assert.ok(!runtime.instructions.some((i) => i.keyword === 'RUN' && /npm (ci|install)/.test(i.args)));
  });

  it('runs as a non-root user, `slotlake run`, with no setting or secret baked in', () => {
    const users = runtime.instructions.filter((i) => i.keyword === 'USER');
    assert.ok(users.length > 0, 'the runtime stage sets USER');
    assert.ok(!['root', '0', '0:0'].includes(users.at(-1)!.args), `USER ${users.at(-1)!.args} is not root`);
    const cmd = runtime.instructions.filter((i) => i.keyword === 'CMD').at(-1);
    assert.deepEqual(JSON.parse(cmd!.args), ['node', 'bin/slotlake.js', 'run']);
    for (const instruction of runtime.instructions.filter((i) => i.keyword === 'ENV' || i.keyword === 'ARG'))
      assert.ok(
        !/DATABASE_URL|PASSWORD|SECRET|SLOTLAKE_|AWS_/i.test(instruction.args),
        `no setting baked in: ${instruction.args}`,
      );
  });

  it('copies only files that exist, and the build context leaves out local state', () => {
    for (const s of stages)
      for (const copy of s.instructions.filter((i) => i.keyword === 'COPY' && !i.args.includes('--from=')))
        for (const source of copy.args
          .split(/\s+/)
          .filter((part) => !part.startsWith('--'))
          .slice(0, -1))
          assert.ok(existsSync(join(ROOT, source)), `${source} exists`);
    const ignored = readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n');
    for (const entry of ['node_modules', '.git', 'dist', '.slotlake', '.serverless', 'cdk.out', 'test'])
      assert.ok(ignored.includes(entry), `.dockerignore has ${entry}`);
  });
});
