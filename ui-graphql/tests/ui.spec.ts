import { readFileSync } from 'node:fs';
import { expect, test, type Page } from '@playwright/test';
import AxeBuilder from '@axe-core/playwright';

const password = process.env.PASSWORD ?? '';
// With WALKOFF_SCREENSHOTS set, each page is saved there (docs/ui/ in the repository).
const screenshots = process.env.WALKOFF_SCREENSHOTS;
const example = readFileSync(new URL('../../examples/walkoff1/semantics-mix.json', import.meta.url), 'utf8');

/**
 * Each page the tests reach is checked by axe (WCAG 2 A and AA: every control labelled, contrast,
 * roles used as meant), then saved as a screenshot when asked for.
 */
async function shot(page: Page, name: string) {
  const audit = await new AxeBuilder({ page }).withTags(['wcag2a', 'wcag2aa']).analyze();
  const found = audit.violations.map((v) => `${name}: ${v.id} (${v.help}) at ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
  expect(found).toEqual([]);
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
  // Copy it, export it (a download holding the workflow), import it again from that file.
  await row.getByRole('button', { name: /^Copy / }).click();
  await expect(page.locator('tr[data-workflow="Semantics mix (Copy)"]')).toBeVisible();
  const downloaded = page.waitForEvent('download');
  await row.getByRole('button', { name: /^Export / }).click();
  const file = await (await downloaded).path();
  expect(JSON.parse(readFileSync(file, 'utf8')).name).toMatch(/^Semantics mix/);
  await page.getByLabel('Workflow file').setInputFiles(file);
  await expect(page.getByRole('status')).toContainText('Imported “Semantics mix (2)');
  await shot(page, 'workflows');

  // Edit a parameter: a wrong value is a problem pinned to its node as you type; a right one
  // saves as a new version, and stays.
  await row.getByRole('link').click();
  await expect(page.getByRole('heading', { name: 'Workflow', exact: true })).toBeVisible();
  const editorNodes = page.getByRole('list', { name: 'Nodes' });
  await editorNodes.getByRole('button', { name: 'echo array', exact: true }).click();
  const echoArray = page.locator('fieldset[data-node="echo array"]');
  await echoArray.getByLabel('data', { exact: true }).fill('"not a list"');
  await expect(echoArray.locator('[data-parameter="data"]').getByRole('alert')).toBeVisible();
  await expect(editorNodes.locator('[data-node="echo array"]')).toHaveAttribute('data-problems', '1');
  await echoArray.getByLabel('data', { exact: true }).fill('[1, 2, 3]');
  await expect(echoArray.locator('[data-parameter="data"]').getByRole('alert')).toHaveCount(0);
  await editorNodes.getByRole('button', { name: 'left', exact: true }).click();
  await page.locator('fieldset[data-node="left"]').getByLabel('call', { exact: true }).fill('went up');
  await page.getByRole('button', { name: 'Save' }).click();
  await expect(page.getByRole('status')).toContainText('Saved: version 2');
  await shot(page, 'editor');
  // A reload signs out (tokens live in memory only) and keeps the page asked for.
  await page.reload();
  await page.getByLabel('Username').fill('admin');
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await editorNodes.getByRole('button', { name: 'left', exact: true }).click();
  await expect(page.locator('fieldset[data-node="left"]').getByLabel('call', { exact: true })).toHaveValue('went up');
  const editorUrl = page.url();

  // Run it: its execution view shows the graph, each node's status live, and the trigger's form.
  await page.getByRole('link', { name: 'Workflows' }).click();
  await row.getByRole('button', { name: /^Run / }).click();
  await expect(page.getByRole('heading', { name: 'Execution', exact: true })).toBeVisible();
  const nodes = page.getByRole('list', { name: 'Nodes' });
  await expect(nodes.locator('[data-node="approval"]')).toHaveAttribute('data-status', 'AWAITING_DATA');
  await expect(nodes.locator('[data-node="start number"]')).toHaveAttribute('data-status', 'SUCCESS');
  await expect(page.getByTestId('execution-status')).toHaveText('EXECUTING');
  await shot(page, 'execution-waiting');
  // Data that is not JSON is refused in place; then the trigger is answered from its form.
  const form = page.getByRole('form', { name: 'Data for approval' });
  await form.getByLabel('Data for “approval” (JSON)').fill('{not json');
  await form.getByRole('button', { name: 'Send' }).click();
  await expect(form.getByRole('alert')).toContainText('not JSON');
  await form.getByLabel('Data for “approval” (JSON)').fill('{"approved": true}');
  await form.getByRole('button', { name: 'Send' }).click();
  await expect(page.getByTestId('execution-status')).toHaveText('COMPLETED');
  await expect(nodes.locator('[data-node="approval"]')).toHaveAttribute('data-status', 'SUCCESS');
  // A node's result, and the timeline of every event.
  await nodes.getByRole('button', { name: 'start number' }).click();
  await expect(page.getByRole('complementary', { name: 'Node start number' })).toContainText('Result');
  await expect(page.getByRole('list', { name: 'Timeline' })).toContainText('COMPLETED');
  await shot(page, 'execution');

  // The executions list shows it finished; another run is aborted from its view.
  await page.getByRole('link', { name: 'Executions' }).click();
  const execution = page.getByRole('table', { name: 'Executions' }).locator('tbody tr').first();
  await expect(execution).toContainText('COMPLETED');
  await page.getByRole('link', { name: 'Workflows' }).click();
  await page.locator('tr[data-workflow^="Semantics mix"]').first().getByRole('button', { name: /^Run / }).click();
  await expect(nodes.locator('[data-node="approval"]')).toHaveAttribute('data-status', 'AWAITING_DATA');
  await page.getByRole('button', { name: 'Abort' }).click();
  await expect(page.getByTestId('execution-status')).toHaveText('ABORTED');
  await page.getByRole('link', { name: 'Executions' }).click();
  const list = page.getByRole('table', { name: 'Executions' }).locator('tbody tr');
  await expect(list.first()).toContainText('ABORTED');
  await shot(page, 'executions');
  // Filtered by status: only the aborted run, then only the completed one.
  const filters = page.getByRole('form', { name: 'Filters' });
  await filters.getByLabel('Status').selectOption('ABORTED');
  await expect(list).toHaveCount(1);
  await expect(list.first()).toContainText('ABORTED');
  await filters.getByLabel('Status').selectOption('COMPLETED');
  await expect(list).toHaveCount(1);
  await expect(list.first()).toContainText('COMPLETED');
  await filters.getByLabel('Status').selectOption('');
  await expect(list).toHaveCount(2);

  // A global: its value masked in the list, revealed on demand to whoever may read it.
  await page.getByRole('link', { name: 'Globals' }).click();
  await page.getByLabel('Name', { exact: true }).fill('api token');
  await page.getByLabel('Value (JSON or text)').fill('s3cret-value');
  await page.getByLabel('Description').fill('for the ticket system');
  await page.getByRole('button', { name: 'Create' }).click();
  const global = page.locator('tr[data-global="api token"]');
  await expect(global).toContainText('for the ticket system');
  await expect(page.locator('main')).not.toContainText('s3cret-value');
  await global.getByRole('button', { name: 'Reveal api token' }).click();
  await expect(global).toContainText('"s3cret-value"');
  await shot(page, 'globals');
  await global.getByRole('button', { name: 'Hide api token' }).click();
  await expect(page.locator('main')).not.toContainText('s3cret-value');
  // Who may use it: chosen roles only, the operator to use it in workflows but not to read it.
  await global.getByRole('button', { name: 'Permissions of api token' }).click();
  const who = page.getByRole('form', { name: 'Who may use api token' });
  await who.getByLabel('Who may use it').selectOption('ROLE_BASED');
  await who.getByLabel('workflow_operator may execute').check();
  await who.getByRole('button', { name: 'Save permissions' }).click();
  await expect(who).toHaveCount(0);
  await global.getByRole('button', { name: 'Permissions of api token' }).click();
  await expect(who.getByLabel('Who may use it')).toHaveValue('ROLE_BASED');
  await expect(who.getByLabel('workflow_operator may execute')).toBeChecked();
  await expect(who.getByLabel('workflow_operator may read')).not.toBeChecked();
  await who.getByRole('button', { name: 'Cancel' }).click();

  // The account page refuses a wrong current password.
  await page.getByRole('link', { name: 'Account' }).click();
  await expect(page.locator('main')).toContainText('Signed in as admin');
  await page.getByLabel('Current password').fill('not the password');
  await page.getByLabel('New password', { exact: true }).fill('a new password');
  await page.getByLabel('New password again').fill('a new password');
  await page.getByRole('button', { name: 'Change password' }).click();
  await expect(page.getByRole('alert')).toContainText('oldPassword');

  // Users: one made with a role, listed with it, then deactivated.
  await page.getByRole('link', { name: 'Users' }).click();
  const newUser = page.getByRole('form', { name: 'New user' });
  await newUser.getByLabel('Username').fill('analyst');
  await newUser.getByLabel('Password').fill('analyst password');
  await newUser.getByLabel('workflow_developer').check();
  await newUser.getByRole('button', { name: 'Create user' }).click();
  const analyst = page.locator('tr[data-user="analyst"]');
  await expect(analyst).toContainText('workflow_developer');
  await analyst.getByRole('button', { name: 'Deactivate analyst' }).click();
  await expect(analyst).toContainText('no');
  await expect(page.getByRole('table', { name: 'Roles' })).toContainText('workflow_operator');
  // A custom role made from its grants, then given to the analyst.
  const newRole = page.getByRole('form', { name: 'New role' });
  await newRole.getByLabel('Role name').fill('triage');
  await newRole.getByLabel('Role description').fill('runs the triage workflows');
  await newRole.getByLabel('workflows read').check();
  await newRole.getByLabel('workflows execute').check();
  await newRole.getByRole('button', { name: 'Create role' }).click();
  const triage = page.locator('tr[data-role="triage"]');
  await expect(triage).toContainText(/workflows: (read, execute|execute, read)/);
  await triage.getByRole('button', { name: 'Edit role triage' }).click();
  await page.getByRole('form', { name: 'Edit role triage' }).getByLabel('global_variables read').check();
  await page.getByRole('form', { name: 'Edit role triage' }).getByRole('button', { name: 'Save role' }).click();
  await expect(triage).toContainText('global_variables: read');
  await analyst.getByRole('button', { name: 'Edit analyst' }).click();
  const editAnalyst = page.getByRole('form', { name: 'Edit analyst' });
  await editAnalyst.getByLabel('triage').check();
  await editAnalyst.getByRole('button', { name: 'Save user' }).click();
  await expect(analyst).toContainText('triage');
  await shot(page, 'users');

  // A trigger with a schema gets a form made from it: the triage example asks for `approved`.
  await page.getByRole('link', { name: 'Workflows' }).click();
  await page.getByLabel('Workflow file').setInputFiles(new URL('../../examples/triage.json', import.meta.url).pathname);
  await expect(page.getByRole('status')).toContainText('Imported “Alert triage');
  await page.locator('tr[data-workflow="Alert triage"]').getByRole('button', { name: /^Run / }).click();
  await expect(nodes.locator('[data-node="approval"]')).toHaveAttribute('data-status', 'AWAITING_DATA');
  const approval = page.getByRole('form', { name: 'Data for approval' });
  await approval.getByLabel('approved (required)').check();
  await shot(page, 'trigger-form');
  await approval.getByRole('button', { name: 'Send' }).click();
  await expect(page.getByTestId('execution-status')).toHaveText('COMPLETED');
  await expect(nodes.locator('[data-node="wrap up"]')).toHaveAttribute('data-status', 'SUCCESS');

  // The app catalogue, with each action's parameters.
  await page.getByRole('link', { name: 'Apps' }).click();
  await expect(page.getByRole('article', { name: /^basics / })).toContainText('echo_string');
  await shot(page, 'apps');

  await page.getByRole('button', { name: 'Sign out' }).click();
  await expect(page.getByRole('button', { name: 'Sign in' })).toBeVisible();
  expect(problems).toEqual([]);

  // A workflow operator sees the workflow but no Save button, and cannot type into it.
  const operator = await page.request.post('/graphql', {
    data: {
      query: 'mutation($p: String!) { login(username: "admin", password: $p) { accessToken } }',
      variables: { p: password },
    },
  });
  const admin = ((await operator.json()) as { data: { login: { accessToken: string } } }).data.login.accessToken;
  const role = await page.request.post('/graphql', {
    headers: { authorization: `Bearer ${admin}` },
    data: { query: '{ role(id: "workflow_operator") { id } }' },
  });
  const roleId = ((await role.json()) as { data: { role: { id: string } } }).data.role.id;
  await page.request.post('/graphql', {
    headers: { authorization: `Bearer ${admin}` },
    data: {
      query: 'mutation($r: ID!) { createUser(input: {username: "operator", password: "operator password", roleIds: [$r]}) { id } }',
      variables: { r: roleId },
    },
  });
  await page.goto(editorUrl);
  await page.getByLabel('Username').fill('operator');
  await page.getByLabel('Password').fill('operator password');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.getByRole('heading', { name: 'Workflow', exact: true })).toBeVisible();
  await editorNodes.getByRole('button', { name: 'left', exact: true }).click();
  await expect(page.locator('fieldset[data-node="left"]').getByLabel('call', { exact: true })).toHaveValue('went up');
  await expect(page.getByRole('button', { name: 'Save' })).toHaveCount(0);
  await expect(page.getByRole('form', { name: 'Add a node' })).toHaveCount(0);
  await expect(page.locator('fieldset[data-node="left"]').getByLabel('call', { exact: true })).not.toBeEditable();
  // It may use the global but not read it: revealing is refused, and said so.
  await page.getByRole('link', { name: 'Globals' }).click();
  await page.locator('tr[data-global="api token"]').getByRole('button', { name: 'Reveal api token' }).click();
  await expect(page.locator('tr[data-global="api token"]')).toContainText('may use global');
  // It changes its own password, which signs it out; the new one works.
  await page.getByRole('link', { name: 'Account' }).click();
  await page.getByLabel('Current password').fill('operator password');
  await page.getByLabel('New password', { exact: true }).fill('operator password 2');
  await page.getByLabel('New password again').fill('operator password 2');
  await page.getByRole('button', { name: 'Change password' }).click();
  await expect(page.getByRole('button', { name: 'Sign in' })).toBeVisible();
  await page.getByLabel('Username').fill('operator');
  await page.getByLabel('Password').fill('operator password 2');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.getByRole('button', { name: 'Sign out' })).toBeVisible();
});

test('build a workflow in the editor: nodes from the catalogue, branches, variables, code with problems, permissions; run it with variables', async ({ page }) => {
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(e.message));
  await signIn(page, password);
  const create = page.getByRole('form', { name: 'New workflow' });
  await create.getByLabel("New workflow's name").fill('Built here');
  await create.getByRole('button', { name: 'New workflow' }).click();
  await expect(page.getByRole('heading', { name: 'Workflow', exact: true })).toBeVisible();
  await expect(page.getByText('No problems')).toBeVisible();
  const nodes = page.getByRole('list', { name: 'Nodes' });

  // A variable, then an action from the catalogue whose parameter reads it.
  await page.getByRole('button', { name: 'Add variable' }).click();
  await page.getByLabel('Name of variable 1').fill('greeting');
  await page.getByLabel('Default value of greeting').fill('hello');
  const add = page.getByRole('form', { name: 'Add a node' });
  await add.getByLabel('App', { exact: true }).selectOption({ label: 'basics 1.0.0' });
  await add.getByLabel('Action', { exact: true }).selectOption('echo_string');
  await add.getByLabel("New node's label").fill('say');
  await add.getByRole('button', { name: 'Add node' }).click();
  const say = page.locator('fieldset[data-node="say"]');
  // Its required parameter is missing: a problem pinned to the parameter, the node and the graph.
  await expect(say.locator('[data-parameter="call"]')).toHaveAttribute('aria-invalid', 'true');
  await expect(page.locator('.react-flow__node.has-problems')).toHaveCount(1);
  await say.getByLabel('Source of call').selectOption('WORKFLOW_VARIABLE');
  await say.getByLabel('call', { exact: true }).selectOption({ label: 'greeting' });
  await expect(say.locator('[data-parameter="call"]')).toHaveAttribute('aria-invalid', 'false');

  // A condition between them: its code is checked as typed, a syntax error underlined where it is.
  await add.getByLabel('Kind', { exact: true }).selectOption('condition');
  await add.getByLabel("New node's label").fill('check');
  await add.getByRole('button', { name: 'Add node' }).click();
  const code = page.getByLabel('Code of check');
  await code.click();
  await page.keyboard.press('ControlOrMeta+a');
  await page.keyboard.type('selected_node = (say');
  await expect(page.locator('fieldset[data-node="check"] .cm-lintRange-error')).toBeVisible();
  await expect(page.getByRole('alert', { name: 'Problems of check' })).toContainText('line 1');
  await shot(page, 'editor-code');
  await page.keyboard.press('ControlOrMeta+a');
  await page.keyboard.type('selected_node = say');
  await expect(page.locator('fieldset[data-node="check"] .cm-lintRange-error')).toHaveCount(0);

  // Branches: start to check by dragging from handle to handle, check to say from the keyboard.
  await page.locator('.react-flow__node').filter({ hasText: /^start/ }).locator('.react-flow__handle.source').dragTo(
    page.locator('.react-flow__node').filter({ hasText: /^check/ }).locator('.react-flow__handle.target'),
  );
  await expect(page.locator('.react-flow__edge')).toHaveCount(1);
  // From the keyboard alone: the node from the list, the branch's target by typing its name.
  await nodes.getByRole('button', { name: 'check', exact: true }).focus();
  await page.keyboard.press('Enter');
  await page.getByLabel('Branch to').focus();
  await page.keyboard.type('say');
  await page.keyboard.press('Tab');
  await expect(page.getByRole('button', { name: 'Add branch' })).toBeFocused();
  await page.keyboard.press('Enter');
  await expect(page.locator('.react-flow__edge')).toHaveCount(2);
  // A node in the graph takes the focus and opens with Enter too.
  await page.locator('.react-flow__node', { hasText: /^say/ }).focus();
  await page.keyboard.press('Enter');
  await expect(page.locator('fieldset[data-node="say"]')).toBeVisible();
  await expect(page.getByText('No problems')).toBeVisible();
  await page.getByRole('button', { name: 'Save' }).click();
  await expect(page.getByRole('status')).toContainText('Saved: version 2');
  await shot(page, 'editor-graph');

  // Per-object permissions: only roles chosen here; kept by the save.
  await page.getByLabel('Who may use it').selectOption('ROLE_BASED');
  await page.getByLabel('workflow_operator may read').check();
  await page.getByLabel('workflow_operator may execute').check();
  await page.getByRole('button', { name: 'Save' }).click();
  await expect(page.getByRole('status')).toContainText('Saved: version 3');
  await page.getByRole('button', { name: 'Reload' }).click();
  await expect(page.getByLabel('Who may use it')).toHaveValue('ROLE_BASED');
  await expect(page.getByLabel('workflow_operator may execute')).toBeChecked();
  await expect(page.getByLabel('workflow_operator may update')).not.toBeChecked();

  // Run with this run's value of the variable: the action echoes it.
  const run = page.getByRole('form', { name: 'Run' });
  await run.getByLabel('greeting').fill('hi there');
  await run.getByRole('button', { name: 'Run with these values' }).click();
  await expect(page.getByTestId('execution-status')).toHaveText('COMPLETED');
  await nodes.getByRole('button', { name: 'say' }).click();
  await expect(page.getByRole('complementary', { name: 'Node say' })).toContainText('hi there');
  expect(problems).toEqual([]);
});
