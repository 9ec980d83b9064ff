import { readFileSync } from 'node:fs';
import { expect, test, type Page } from '@playwright/test';

const password = process.env.PASSWORD ?? '';
// With WALKOFF_SCREENSHOTS set, each page is saved there (docs/ui/ in the repository).
const screenshots = process.env.WALKOFF_SCREENSHOTS;
const example = readFileSync(new URL('../../examples/walkoff1/semantics-mix.json', import.meta.url), 'utf8');

async function shot(page: Page, name: string) {
  if (screenshots) await page.screenshot({ path: `${screenshots}/${name}.png`, fullPage: true });
}

async function signIn(page: Page, pass: string) {
  await page.goto('/');
  await page.getByLabel('Username').fill('admin');
  await page.getByLabel('Password').fill(pass);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

test('a wrong password is refused with a message', async ({ page }) => {
  await signIn(page, 'not the password');
  await expect(page.getByRole('alert')).toContainText('invalid username or password');
  await shot(page, 'login');
});

test('sign in, import a WALKOFF workflow, run it and follow it live, read the apps, sign out', async ({ page }) => {
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(e.message));
  await signIn(page, password);
  await expect(page.getByRole('heading', { name: 'Workflows' })).toBeVisible();

  // Import by paste; the new workflow is listed.
  await page.getByLabel('Workflow JSON').fill(example);
  await page.getByRole('button', { name: 'Import' }).click();
  await expect(page.getByRole('status')).toContainText('Imported “Semantics mix');
  const row = page.locator('tr[data-workflow^="Semantics mix"]').first();
  await expect(row).toBeVisible();
  // A broken document shows its problem, and nothing is imported.
  await page.getByLabel('Workflow JSON').fill('{"name": "broken"');
  await page.getByRole('button', { name: 'Import' }).click();
  await expect(page.getByRole('alert', { name: 'Problems' })).toBeVisible();
  await shot(page, 'workflows');

  // Run it: the executions page lists it, and its status arrives over the subscription.
  await row.getByRole('button', { name: /^Run / }).click();
  await expect(page.getByRole('heading', { name: 'Executions' })).toBeVisible();
  const execution = page.getByRole('table', { name: 'Executions' }).locator('tbody tr').first();
  await expect(execution).toContainText('Semantics mix');
  await expect(execution).toContainText('EXECUTING');
  await shot(page, 'executions');
  // Its trigger answered elsewhere (through the API): the row turns COMPLETED without a reload,
  // carried by the subscription.
  const id = await execution.getAttribute('data-execution');
  const call = async (query: string, variables: object, token?: string) => {
    const response = await page.request.post('/graphql', {
      data: { query, variables },
      headers: token ? { authorization: `Bearer ${token}` } : {},
    });
    return (await response.json()) as { data: Record<string, any>; errors?: unknown[] };
  };
  const login = await call(
    'mutation($p: String!) { login(username: "admin", password: $p) { accessToken } }',
    { p: password },
  );
  const token = login.data.login.accessToken as string;
  await expect
    .poll(async () => {
      const sent = await call(
        'mutation($e: ID!) { sendTriggerData(executionId: $e, trigger: "approval", data: {approved: true}) }',
        { e: id },
        token,
      );
      return sent.errors ? 'not yet' : 'sent';
    })
    .toBe('sent');
  await expect(execution).toContainText('COMPLETED');

  // The app catalogue, with each action's parameters.
  await page.getByRole('link', { name: 'Apps' }).click();
  await expect(page.getByRole('article', { name: /^basics / })).toContainText('echo_string');
  await shot(page, 'apps');

  await page.getByRole('button', { name: 'Sign out' }).click();
  await expect(page.getByRole('button', { name: 'Sign in' })).toBeVisible();
  expect(problems).toEqual([]);
});
