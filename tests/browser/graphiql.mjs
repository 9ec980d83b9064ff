// GraphiQL as a user meets it, in headless Chromium: open /graphql, log in with the page's own
// form, run a query, read the result. Every request must stay on the server's own origin (the
// page's assets are embedded, no CDN). Prints the result pane's text; exits non-zero on failure.
//
//   WALKOFF=http://127.0.0.1:8080 PASSWORD=… node graphiql.mjs

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const base = process.env.WALKOFF;
const password = process.env.PASSWORD;
const profile = mkdtempSync(join(tmpdir(), 'walkoff-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const problems = [];
try {
  const page = await context.newPage();
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('request', (r) => {
    const url = r.url();
    if (!url.startsWith(base) && !url.startsWith('data:') && !url.startsWith('ws://')) {
      problems.push(`request outside the server: ${url}`);
    }
  });
  page.on('requestfailed', (r) => {
    // Source maps are asked for only by developer tools.
    if (!r.url().endsWith('.map')) problems.push(`request failed: ${r.url()}`);
  });
  const query = '{ me { username roles { name } } apps { name } }';
  await page.goto(`${base}/graphql?query=${encodeURIComponent(query)}`);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByText('signed in as admin').waitFor({ timeout: 20000 });
  await page.locator('.graphiql-execute-button').click();
  const response = page.locator('.graphiql-response');
  await response.getByText('"basics"').waitFor({ timeout: 20000 });
  const text = await response.innerText();
  if (!text.includes('"username": "admin"')) problems.push(`unexpected result: ${text}`);
  console.log(text);
} catch (e) {
  problems.push(String(e));
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
if (problems.length > 0) {
  console.error(problems.join('\n'));
  process.exit(1);
}
