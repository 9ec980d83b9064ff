import { defineConfig } from '@playwright/test';
import base from './playwright.config';

// The UI's measurements (scripts/ui-bench): a 1,000-node workflow and 10,000 events, in Chromium.
export default defineConfig({ ...base, testDir: 'bench', testMatch: '*.bench.ts', timeout: 600_000 });
