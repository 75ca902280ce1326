// Loads the gateway's /dashboard in headless Chromium while traffic flows, and checks that every
// number the page shows is the one in the /status answer it rendered. Usage:
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
const shown = await page.evaluate(() => ({
  refreshed: Number(document.body.dataset.refreshed),
  generated: document.getElementById("generated").textContent,
  rows: [...document.querySelectorAll("#targets tbody tr")].map((tr) => ({
    model: tr.dataset.model,
    upstream: tr.dataset.upstream,
    ...Object.fromEntries([...tr.querySelectorAll("td[data-field]")].map((td) => [td.dataset.field, td.textContent])),
  })),
  failures: [...document.querySelectorAll("#failures li")].map((li) => li.dataset.code),
  models: [...document.querySelectorAll("#models tbody tr")].map((tr) => ({
    model: tr.dataset.model,
    ...Object.fromEntries([...tr.querySelectorAll("td[data-field]")].map((td) => [td.dataset.field, td.textContent])),
  })),
  upstreams: [...document.querySelectorAll("#upstreams .chip")].map((c) => c.textContent),
  jobs: { ...document.getElementById("jobs").dataset, text: document.getElementById("jobs").textContent },
  error: document.getElementById("error").textContent,
}));
const status = answers.find((a) => shown.generated === "As of " + a.generated_at + ".");
const problems = [];
if (!status) problems.push(`no /status answer matches the page's ${shown.generated}`);
if (shown.error) problems.push(`the page shows an error: ${shown.error}`);
const pct = (v) => (v == null ? "–" : (100 * v).toFixed(1) + "%");
const ms = (v) => (v == null ? "–" : v < 1000 ? v.toFixed(0) + " ms" : (v / 1000).toFixed(2) + " s");
if (status) {
  if (shown.rows.length !== status.targets.length) problems.push(`${shown.rows.length} rows for ${status.targets.length} targets`);
  for (const t of status.targets) {
    const row = shown.rows.find((r) => r.model === t.model && r.upstream === t.upstream);
    if (!row) { problems.push(`no row for ${t.model} ${t.upstream}`); continue; }
    const w = t.windows["1m"];
    const expected = {
      breaker: t.breaker || "–",
      attempts: String(w.attempts),
      success: pct(w.success_rate),
      timeouts: pct(w.timeout_rate),
      first_token_p50: ms(w.first_token_ms && w.first_token_ms.p50),
      first_token_p99: ms(w.first_token_ms && w.first_token_ms.p99),
      total_p99: ms(w.total_ms && w.total_ms.p99),
    };
    for (const [field, value] of Object.entries(expected)) {
      if (row[field] !== value) problems.push(`${t.model} ${t.upstream} ${field}: page ${row[field]}, /status ${value}`);
    }
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
  if (JSON.stringify(codes) !== JSON.stringify(shown.failures)) problems.push(`failures: page ${shown.failures}, /status ${codes}`);
}
await page.screenshot({ path: screenshot, fullPage: true });
await browser.close();
console.log(JSON.stringify({ refreshed: shown.refreshed, rows: shown.rows, models: shown.models, failures: shown.failures.length, upstreams: shown.upstreams, jobs: shown.jobs, problems }));
process.exit(problems.length ? 1 : 0);
