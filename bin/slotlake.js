#!/usr/bin/env node
// The `slotlake` command: the CLI bundled into one file (npm install runs the build through `prepare`).
// V8's compile cache (Node's own, in the OS temp folder; NODE_DISABLE_COMPILE_CACHE=1 turns it off): a host
// that runs slotlake again and again compiles the bundle once. Enabled before the bundle is imported.
import module from 'node:module';

module.enableCompileCache?.();
await import('../dist/bundle/cli.mjs');
