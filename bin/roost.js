#!/usr/bin/env node
// The `roost` command line client (compiled from src/cli by `npm ci` / `npm run build`).
import '../dist/cli/main.js';
