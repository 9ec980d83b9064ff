import { defineConfig } from '@playwright/test';

// Run by tests/gateway.rs against a real `walkoff serve` (WALKOFF_URL), in Debian's chromium.
export default defineConfig({
  testDir: 'tests',
  timeout: 60_000,
  retries: 0,
  workers: 1,
  reporter: 'line',
  use: {
    baseURL: process.env.WALKOFF_URL ?? 'http://127.0.0.1:8080',
    viewport: { width: 1280, height: 800 },
    launchOptions: {
      executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    },
  },
});
