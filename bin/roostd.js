#!/usr/bin/env node
// The `roostd` member daemon (compiled from src/daemon by `npm ci` / `npm run build`).
import '../dist/daemon/main.js';
