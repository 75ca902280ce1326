// Loads the gateway's /dashboard in headless Chromium while traffic flows, and checks that every
// number the page shows — and every point of its charts — is the one in the /status answer it
// rendered. Usage:
//   node dashboard.mjs http://127.0.0.1:PORT ADMIN_KEY SCREENSHOT.png
// Prints a JSON summary; exits non-zero on any mismatch.
import { chromium } from "playwright-core";

const [base, key, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.HOURGLASS_CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
const answers = [];
page.on("response", async (response) => {
  if (response.url().endsWith("/status") && response.ok()) answers.push(await response.json());
});
await page.goto(`${base}/dashboard#key=${encodeURIComponent(key)}`);
// Three refreshes, so the page has shown data that changed under it.
await page.waitForFunction(() => Number(document.body.dataset.refreshed || 0) >= 3, null, { timeout: 20000 });
// Read the DOM and the /status answer it was built from, between two refreshes.
const shown = await page.evaluate(() => {
  const points = (card, series) =>
    [...card.querySelectorAll(`[data-series="${series}"]`)].map((p) => [Number(p.dataset.i), Number(p.dataset.v)]);
  return {
    refreshed: Number(document.body.dataset.refreshed),
    generated: document.getElementById("updated").dataset.generated,
    updated: document.getElementById("updated").textContent,
    rows: [...document.querySelectorAll("#targets .card")].map((card) => ({
      model: card.dataset.model,
      upstream: card.dataset.upstream,
      breaker_state: card.querySelector("[data-field=breaker]").dataset.state,
      breaker_text: card.querySelector("[data-field=breaker]").textContent,
      ...Object.fromEntries([...card.querySelectorAll(".numbers [data-field]")].map((b) => [b.dataset.field, b.textContent])),
      charts: [...card.querySelectorAll("svg[data-chart]")].map((s) => s.dataset.chart),
      success_points: points(card, "success"),
      p50_points: points(card, "p50"),
      p99_points: points(card, "p99"),
      failure_points: Object.fromEntries(
        [...new Set([...card.querySelectorAll('[data-series^="failures:"]')].map((r) => r.dataset.series))]
          .map((name) => [name.slice("failures:".length), points(card, name)])),
    })),
    failures: [...document.querySelectorAll("#failures li")].map((li) => ({ code: li.dataset.code, text: li.textContent })),
    models: [...document.querySelectorAll("#models tbody tr")].map((tr) => ({
      model: tr.dataset.model,
      ...Object.fromEntries([...tr.querySelectorAll("td[data-field]")].map((td) => [td.dataset.field, td.textContent])),
    })),
    upstreams: [...document.querySelectorAll("#upstreams .chip")].map((c) => c.textContent),
    jobs: { ...document.getElementById("jobs").dataset, text: document.getElementById("jobs").textContent },
    error: document.getElementById("error").textContent,
  };
});
const status = answers.find((a) => shown.generated === a.generated_at);
const problems = [];
if (!status) problems.push(`no /status answer matches the page's ${shown.generated}`);
if (shown.error) problems.push(`the page shows an error: ${shown.error}`);
if (!/^\d+ s ago$/.test(shown.updated)) problems.push(`the update time is not relative: "${shown.updated}"`);
const pct = (v) => (v == null ? "–" : (100 * v).toFixed(1) + "%");
const ms = (v) => (v == null ? "–" : v < 1000 ? v.toFixed(0) + " ms" : (v / 1000).toFixed(2) + " s");
// The (index, value) points a column of /status plots: every step that has a value.
const expectedPoints = (column) => column.map((v, i) => [i, v]).filter(([, v]) => v != null && v !== 0);
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
let plotted = 0;
if (status) {
  if (shown.rows.length !== status.targets.length) problems.push(`${shown.rows.length} cards for ${status.targets.length} targets`);
  for (const t of status.targets) {
    const row = shown.rows.find((r) => r.model === t.model && r.upstream === t.upstream);
    if (!row) { problems.push(`no card for ${t.model} ${t.upstream}`); continue; }
    const w = t.windows["1m"];
    const expected = {
      attempts: `${w.attempts} attempts`,
      success: pct(w.success_rate),
      timeouts: pct(w.timeout_rate),
      first_token_p50: ms(w.first_token_ms && w.first_token_ms.p50),
      first_token_p99: ms(w.first_token_ms && w.first_token_ms.p99),
      total_p99: ms(w.total_ms && w.total_ms.p99),
    };
    for (const [field, value] of Object.entries(expected)) {
      if (row[field] !== value) problems.push(`${t.model} ${t.upstream} ${field}: page ${row[field]}, /status ${value}`);
    }
    if (row.breaker_state !== (t.breaker || "")) problems.push(`${t.upstream} breaker: page ${row.breaker_state}, /status ${t.breaker}`);
    if (t.breaker === "open" && !/trial calls in \d+ s/.test(row.breaker_text)) problems.push(`an open breaker does not say when it half-opens: ${row.breaker_text}`);
    if (!same(row.charts, ["success", "first_token", "failures"])) problems.push(`${t.upstream} charts: ${row.charts}`);
    // Every chart point is the /status series' value at that step, and every value is plotted.
    const s = t.series;
    const successWanted = s.success_rate.map((v, i) => [i, v]).filter(([, v]) => v != null);
    if (!same(row.success_points, successWanted)) problems.push(`${t.upstream} success points: page ${JSON.stringify(row.success_points)}, /status ${JSON.stringify(successWanted)}`);
    const p50Wanted = s.first_token_p50_ms.map((v, i) => [i, v]).filter(([, v]) => v != null);
    const p99Wanted = s.first_token_p99_ms.map((v, i) => [i, v]).filter(([, v]) => v != null);
    if (!same(row.p50_points, p50Wanted)) problems.push(`${t.upstream} p50 points differ`);
    if (!same(row.p99_points, p99Wanted)) problems.push(`${t.upstream} p99 points differ`);
    for (const [phase, counts] of Object.entries(s.failures)) {
      if (!same(row.failure_points[phase] || [], expectedPoints(counts))) problems.push(`${t.upstream} ${phase} failure bars: page ${JSON.stringify(row.failure_points[phase])}, /status ${JSON.stringify(expectedPoints(counts))}`);
    }
    for (const phase of Object.keys(row.failure_points)) {
      if (!(phase in s.failures)) problems.push(`${t.upstream} plots ${phase} failures /status does not have`);
    }
    plotted += row.success_points.length + row.p99_points.length + Object.values(row.failure_points).reduce((n, p) => n + p.length, 0);
  }
  for (const u of status.upstreams) {
    const chip = shown.upstreams.find((c) => c.startsWith(u.name));
    if (!chip) problems.push(`no chip for ${u.name}`);
    else if (u.next_check_in_s != null && !chip.includes("next check in")) problems.push(`chip ${u.name} does not say when it is checked next: ${chip}`);
  }
  for (const m of status.models) {
    const row = shown.models.find((r) => r.model === m.model);
    if (!row) { problems.push(`no models row for ${m.model}`); continue; }
    for (const field of ["retries", "failovers", "hedges_started", "hedges_won"]) {
      if (row[field] !== String(m[field])) problems.push(`${m.model} ${field}: page ${row[field]}, /status ${m[field]}`);
    }
  }
  if (status.jobs) {
    if (shown.jobs.queued !== String(status.jobs.queued)) problems.push(`jobs queued: page ${shown.jobs.queued}, /status ${status.jobs.queued}`);
    if (shown.jobs.running !== String(status.jobs.running)) problems.push(`jobs running: page ${shown.jobs.running}, /status ${status.jobs.running}`);
    if (!shown.jobs.text.includes(`${status.jobs.submitted} submitted`)) problems.push(`jobs: page "${shown.jobs.text}", /status submitted ${status.jobs.submitted}`);
  }
  const codes = status.recent_failures.slice(0, 20).map((f) => f.code);
  if (!same(codes, shown.failures.map((f) => f.code))) problems.push(`failures: page ${shown.failures.map((f) => f.code)}, /status ${codes}`);
  if (shown.failures.some((f) => !/\d+ (s|min|h) ago/.test(f.text))) problems.push(`a failure's time is not relative`);
}
await page.screenshot({ path: screenshot, fullPage: true });
await browser.close();
console.log(JSON.stringify({ refreshed: shown.refreshed, plotted, rows: shown.rows.map(({ success_points, p50_points, p99_points, failure_points, ...rest }) => ({ ...rest, failure_phases: Object.keys(failure_points) })), models: shown.models, failures: shown.failures.length, upstreams: shown.upstreams, jobs: shown.jobs, problems }));
process.exit(problems.length ? 1 : 0);
