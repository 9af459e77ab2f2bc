// Build of the web UI: `ui/` in, `dist/ui/` out (what every member serves at `/ui/`). Everything the page
// needs is bundled; nothing is fetched from elsewhere at run time.

import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

const here = (rel: string): string => fileURLToPath(new URL(rel, import.meta.url));

export default defineConfig({
  root: here('./'),
  base: '/ui/',
  plugins: [react()],
  build: {
    outDir: here('../dist/ui'),
    emptyOutDir: true,
    // The daemon's CSP allows no inline code, so no asset is inlined into the page as a data: script.
    assetsInlineLimit: 0,
    sourcemap: false,
  },
});
