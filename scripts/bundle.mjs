/**
 * Bundles the two entrypoints with esbuild (`npm run build` runs it after the TypeScript compiler), so a
 * process loads ONE file instead of resolving and compiling some thousand modules under node_modules:
 *
 *   dist/bundle/lambda.mjs   the Lambda handler (`handler`); serverless.yml packages this file (and its map) alone
 *   dist/bundle/cli.mjs      the `slotlake` command (bin/slotlake.js imports it); also the Fargate task's
 *
 * Every dependency is inside, the AWS SDK v3 included (Lambda's own copy of the SDK is whatever version the
 * runtime has that day; this one is the version package-lock.json pins and the tests ran). Modules imported
 * with `import()` (the Parquet writer, the snapshot reader, verify, Secrets Manager, the RDS signer, the RDS
 * CA bundle, lib-storage, the metrics) are in the same file but evaluated only when first used.
 *
 * Not bundled: `slotlake dev`'s local stack (src/devstack: embedded Postgres, s3rver, dynalite are
 * devDependencies), which the CLI bundle imports from the compiler's output in dist/devstack/; and
 * `pg-native`, which node-postgres loads only when asked to (never here).
 *
 * Source maps point at src/*.ts (without the sources' text); NODE_OPTIONS=--enable-source-maps, which
 * serverless.yml and the Dockerfile set, turns stack traces into TypeScript lines.
 */
import { mkdirSync } from 'node:fs';
import { isBuiltin } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath, URL } from 'node:url';
import { build } from 'esbuild';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const OUT = join(ROOT, 'dist', 'bundle');

/** The CommonJS dependencies bundled into ESM still call `require()` for Node's own modules. */
const REQUIRE_SHIM =
  "import { createRequire as __slotlakeCreateRequire } from 'node:module';\n" +
  'const require = __slotlakeCreateRequire(import.meta.url);';

/** `slotlake dev` imports src/devstack/dev.ts: it stays outside, loaded from dist/devstack/dev.js. */
const devstackOutside = {
  name: 'devstack-outside',
  setup(pluginBuild) {
    pluginBuild.onResolve({ filter: /\/devstack\/dev\.js$/ }, (args) => {
      const target = join(ROOT, 'dist', 'devstack', 'dev.js');
      const from = relative(OUT, target).split('\\').join('/');
      return args.kind === 'dynamic-import'
        ? { path: from.startsWith('.') ? from : `./${from}`, external: true }
        : undefined;
    });
  },
};

/**
 * Node's built-in modules through `require()`, never `import`: an ESM import of a built-in makes Node build
 * the module's ESM facade, which reads every export — and `node:http`'s WebSocket getters load Node's whole
 * fetch implementation (undici), some 50–100 ms of a cold start for nothing. Required, a built-in's exports
 * are read only when used.
 */
const builtinsThroughRequire = {
  name: 'builtins-through-require',
  setup(pluginBuild) {
    pluginBuild.onResolve({ filter: /^[a-z0-9_:/]+$/ }, (args) =>
      isBuiltin(args.path) && args.kind !== 'require-call'
        ? { path: args.path, namespace: 'builtin-through-require' }
        : undefined,
    );
    pluginBuild.onLoad({ filter: /.*/, namespace: 'builtin-through-require' }, (args) => ({
      contents: `module.exports = require(${JSON.stringify(args.path)});`,
      loader: 'js',
    }));
  },
};

const ENTRIES = [
  { name: 'lambda', entry: 'src/entrypoints/lambda.ts' },
  { name: 'cli', entry: 'src/entrypoints/cli.ts' },
];

for (const { name, entry } of ENTRIES) {
  const outfile = join(OUT, `${name}.mjs`);
  mkdirSync(dirname(outfile), { recursive: true });
  await build({
    entryPoints: [join(ROOT, entry)],
    outfile,
    bundle: true,
    platform: 'node',
    target: 'node22',
    format: 'esm',
    // The packages' ES module builds first: unused AWS SDK commands and helpers are left out (the CommonJS
    // builds cannot be tree-shaken), some 0.5 MB less to compile at every cold start.
    mainFields: ['module', 'main'],
    // Whitespace and syntax only: names stay as written (error names, stack traces, libraries that read
    // constructor names), and the source map still leads back to the TypeScript.
    minifyWhitespace: true,
    minifySyntax: true,
    banner: { js: REQUIRE_SHIM },
    external: ['pg-native'],
    plugins: [devstackOutside, builtinsThroughRequire],
    sourcemap: 'linked',
    sourcesContent: false,
    legalComments: 'eof',
    logLevel: 'warning',
  });
}
