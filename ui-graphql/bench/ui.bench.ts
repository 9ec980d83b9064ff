import { writeFileSync } from 'node:fs';
import { expect, test, type Page } from '@playwright/test';

// What a security team's large workflow looks like to the UI: 1,000 nodes (a trigger to start on,
// and 111 lanes of 9 parallel actions, 8 shards each, no positions, so the layered layout places
// them), whose run sends about 10,000 events to the execution view once the trigger is answered.
const LANES = 111;
const DEPTH = 9;
const SHARDS = [1, 2, 3, 4, 5, 6, 7, 8];
const ROUNDS = Number(process.env.ROUNDS ?? 5);
const password = process.env.PASSWORD ?? '';
const report = process.env.REPORT;

function workflow() {
  const nodes: object[] = [{ label: 'start', kind: 'trigger', schema: {} }];
  const branches: object[] = [];
  for (let lane = 0; lane < LANES; lane++) {
    for (let step = 0; step < DEPTH; step++) {
      const label = `lane ${lane} step ${step}`;
      nodes.push({
        label,
        kind: 'action',
        app: 'basics',
        action: 'echo_array',
        parallelized: true,
        parameters: [{ name: 'data', value: SHARDS, parallelized: true }],
      });
      branches.push({ from: step === 0 ? 'start' : `lane ${lane} step ${step - 1}`, to: label });
    }
  }
  return { id: 'ui-bench-1000', name: `UI bench ${Date.now()}`, start: 'start', nodes, branches };
}

async function gql(page: Page, token: string, query: string, variables: object = {}) {
  const response = await page.request.post('/graphql', {
    headers: token ? { authorization: `Bearer ${token}` } : {},
    data: { query, variables },
  });
  const body = (await response.json()) as { data: Record<string, any>; errors?: unknown };
  if (body.errors) throw new Error(JSON.stringify(body.errors));
  return body.data;
}

/** Milliseconds from a hash change to the frame after the graph and the node list are drawn. */
async function timeToRender(page: Page, hash: string, nodes: number): Promise<number> {
  return page.evaluate(
    ({ hash, nodes }) =>
      new Promise<number>((resolve) => {
        const start = performance.now();
        window.location.hash = hash;
        const check = () => {
          const drawn = document.querySelectorAll('.react-flow__node').length > 0;
          const listed = document.querySelectorAll('ul[aria-label="Nodes"] > li').length === nodes;
          if (drawn && listed) requestAnimationFrame(() => resolve(performance.now() - start));
          else requestAnimationFrame(check);
        };
        requestAnimationFrame(check);
      }),
    { hash, nodes },
  );
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const percentile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))];

type FrameStats = {
  frames: number;
  maxFrame: number;
  p99Frame: number;
  over50: number;
  longestLoaf: number;
  maxBusy: number;
  busyOver50: number;
};
type TraceEvent = { name: string; ph: string; ts: number; dur?: number; tid: number; args?: { name?: string } };

/**
 * From a trace of the page's main thread: for each interval between two animation frames, the
 * time the thread actually worked (tasks, style, layout, paint). An interval longer than its work
 * is time the thread waited for a core, which the run's own processes share.
 */
function busyPerFrame(events: TraceEvent[]): number[] {
  const main = events.find((e) => e.name === 'thread_name' && e.args?.name === 'CrRendererMain')?.tid;
  const onMain = events.filter((e) => e.ph === 'X' && e.tid === main && e.dur).sort((a, b) => a.ts - b.ts || b.dur! - a.dur!);
  const top: TraceEvent[] = [];
  let end = -1;
  for (const e of onMain) {
    if (e.ts >= end) {
      top.push(e);
      end = e.ts + e.dur!;
    }
  }
  const frames = onMain.filter((e) => e.name === 'FireAnimationFrame').map((e) => e.ts);
  const busy: number[] = [];
  for (let i = 1; i < frames.length; i++) {
    const [a, b] = [frames[i - 1], frames[i]];
    let work = 0;
    for (const e of top) if (e.ts < b && e.ts + e.dur! > a) work += Math.min(e.ts + e.dur!, b) - Math.max(e.ts, a);
    busy.push(work / 1000);
  }
  return busy;
}

/**
 * Starts recording every frame: rAF intervals, the browser's own long-animation-frame entries
 * (frames that took past 50 ms, with the scripts that ran in them), and a trace of the main thread.
 */
async function startFrames(page: Page) {
  await page.context().browser()!.startTracing(page, { categories: ['devtools.timeline'] });
  await page.evaluate(() => {
    const w = window as unknown as { frames_: number[]; loaf: number[]; stop: boolean; observer?: PerformanceObserver };
    w.frames_ = [];
    w.loaf = [];
    w.stop = false;
    w.observer?.disconnect();
    const since = performance.now();
    w.observer = new PerformanceObserver((list) =>
      list.getEntries().forEach((e) => {
        if (e.startTime < since) return;
        w.loaf.push(e.duration);
        const scripts = (e as unknown as { scripts: { sourceFunctionName: string; invoker: string; duration: number }[] }).scripts;
        if (e.duration > 50) console.log(`long frame ${Math.round(e.duration)} ms: ${scripts.map((x) => `${x.invoker}/${x.sourceFunctionName} ${Math.round(x.duration)}`).join(', ')}`);
      }),
    );
    w.observer.observe({ type: 'long-animation-frame' });
    let last = performance.now();
    const tick = (t: number) => {
      w.frames_.push(t - last);
      last = t;
      if (!w.stop) requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });
}

async function stopFrames(page: Page): Promise<FrameStats> {
  const { frames, loaf } = await page.evaluate(() => {
    const w = window as unknown as { frames_: number[]; loaf: number[]; stop: boolean; observer?: PerformanceObserver };
    w.stop = true;
    w.observer?.disconnect();
    return { frames: w.frames_.slice(1), loaf: w.loaf };
  });
  const trace = JSON.parse((await page.context().browser()!.stopTracing()).toString()) as { traceEvents: TraceEvent[] };
  const busy = busyPerFrame(trace.traceEvents);
  if (process.env.TRACE_FILE) writeFileSync(`${process.env.TRACE_FILE}-${Date.now()}.json`, JSON.stringify(trace));
  return {
    maxBusy: Math.max(...busy),
    busyOver50: busy.filter((b) => b > 50).length,
    frames: frames.length,
    maxFrame: Math.max(...frames),
    p99Frame: percentile(frames, 0.99),
    over50: frames.filter((f) => f > 50).length,
    longestLoaf: loaf.length ? Math.max(...loaf) : 0,
  };
}

test('a 1,000-node workflow: first render, and frames while its 10,000 events arrive', async ({ page }) => {
  const token = (await gql(page, '', 'mutation($p: String!) { login(username: "admin", password: $p) { accessToken } }', { p: password })).login
    .accessToken as string;
  const id = (await gql(page, token, 'mutation($j: JSON!) { importWorkflow(json: $j) { id } }', { j: workflow() })).importWorkflow.id as string;

  page.on('console', (m) => {
    if (m.text().startsWith('long frame')) console.log(m.text());
  });
  await page.goto('/');
  await page.getByLabel('Username').fill('admin');
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.getByRole('heading', { name: 'Workflows' })).toBeVisible();

  const editor: number[] = [];
  const execution: number[] = [];
  const runs: ({ opened: number; events: number; seconds: number } & FrameStats)[] = [];
  // Frames from the first render of the reopened, finished execution until its 10,000 stored
  // events are applied: the UI's own cost, without the run's work on the same two cores.
  const replays: FrameStats[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    await page.evaluate(() => (window.location.hash = '#/workflows'));
    await expect(page.getByRole('heading', { name: 'Workflows' })).toBeVisible();
    editor.push(await timeToRender(page, `#/workflows/${id}`, 1000));

    // The run waits at its trigger: the view opens, then every frame from answering the trigger
    // until the last event is applied is recorded: rAF intervals, and the browser's own
    // long-animation-frame entries (time the main thread blocked a frame, with its scripts).
    const started = Date.now();
    await page.getByRole('button', { name: 'Run now' }).click();
    await expect(page.locator('ul[aria-label="Nodes"] [data-node="start"]')).toHaveAttribute('data-status', 'AWAITING_DATA');
    const opened = (Date.now() - started) / 1000;
    await startFrames(page);
    const cdp = process.env.PROFILE ? await page.context().newCDPSession(page) : null;
    if (cdp) {
      await cdp.send('Profiler.enable');
      await cdp.send('Profiler.start');
    }
    const answered = Date.now();
    await page.getByRole('form', { name: 'Data for start' }).getByRole('button', { name: 'Send' }).click();
    await expect(page.getByTestId('execution-status')).toHaveText('COMPLETED', { timeout: 120_000 });
    await expect(page.locator('ul[aria-label="Nodes"] [data-status="SUCCESS"]')).toHaveCount(1000, { timeout: 120_000 });
    const seconds = (Date.now() - answered) / 1000;
    if (cdp) {
      // Self time by function, for finding what a frame spends (build with --minify false).
      const { profile } = await cdp.send('Profiler.stop');
      const self = new Map<string, number>();
      const byId = new Map(profile.nodes.map((n) => [n.id, n]));
      const dt = profile.timeDeltas ?? [];
      (profile.samples ?? []).forEach((id, i) => {
        const n = byId.get(id)!;
        const key = process.env.PROFILE === 'lines' ? `${n.callFrame.url.split('/').pop()}:${n.callFrame.lineNumber}` : `${n.callFrame.functionName || '(anon)'} ${n.callFrame.url.split('/').pop()}:${n.callFrame.lineNumber}`;
        self.set(key, (self.get(key) ?? 0) + (dt[i] ?? 0) / 1000);
      });
      console.log([...self].sort((a, b) => b[1] - a[1]).slice(0, process.env.PROFILE === 'lines' ? 100000 : 25).map(([k, v]) => `${v.toFixed(1)} ms ${k}`).join('\n'));
    }
    // Every event applied: the count stops moving.
    let events = 0;
    for (let seen = -1; seen !== events; await page.waitForTimeout(500)) {
      seen = events;
      events = Number(await page.locator('section.execution').getAttribute('data-events'));
    }
    const frames = await stopFrames(page);
    runs.push({ opened, events, seconds, ...frames });
    // Reopening the finished execution replays it from its stored events.
    const url = page.url();
    await page.evaluate(() => (window.location.hash = '#/workflows'));
    execution.push(await timeToRender(page, new URL(url).hash, 1000));
    await startFrames(page);
    await expect(page.locator('ul[aria-label="Nodes"] [data-status="SUCCESS"]')).toHaveCount(1000, { timeout: 120_000 });
    await expect(page.locator('section.execution')).toHaveAttribute('data-events', String(events), { timeout: 120_000 });
    replays.push(await stopFrames(page));
  }
  const result = {
    nodes: 1000,
    rounds: ROUNDS,
    editorFirstRenderMs: { median: median(editor), max: Math.max(...editor), all: editor },
    executionReopenMs: { median: median(execution), max: Math.max(...execution), all: execution },
    runs,
    replays,
    userAgent: await page.evaluate(() => navigator.userAgent),
  };
  console.log(JSON.stringify(result, null, 2));
  if (report) writeFileSync(report, JSON.stringify(result, null, 2) + '\n');
});
