#!/usr/bin/env node
// The `slotlake` command: the CLI bundled into one file (npm install runs the build through `prepare`).
import '../dist/bundle/cli.mjs';
