#!/usr/bin/env node
// The `slotlake` command: the compiled CLI (npm install runs the build through `prepare`).
import '../dist/entrypoints/cli.js';
