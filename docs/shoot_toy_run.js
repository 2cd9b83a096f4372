// Screenshots of a toy run in the MLflow UI, for the README's "Browsing a run in the MLflow UI".
// usage: node shoot_toy_run.js PORT EXP_ID RUN_ID OUTDIR
// Needs playwright-core (npm install playwright-core) and Debian chromium at /usr/bin/chromium;
// docs/shoot_toy_run.sh makes the run, starts the server and calls this. Writes
//   OUTDIR/mlflow-toy-run.png   the run page: name, description with the forgetting chart
//   OUTDIR/mlflow-toy-runs.png  the experiment's runs filtered by a tag
const { chromium } = require('playwright-core');
const [port, exp, run, outdir] = process.argv.slice(2);
const T = 120000;
(async () => {
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage({ viewport: { width: 1440, height: 1150 } });
  page.setDefaultTimeout(T);
  const base = `http://127.0.0.1:${port}/#/experiments/${exp}`;
  const closeAssistant = async () => {
    for (const b of await page.locator('button[aria-label*="lose"]').all()) {
      try { if (await b.isVisible()) await b.click({ timeout: 3000 }); } catch (e) {}
    }
  };
  await page.goto(`${base}/runs/${run}`, { waitUntil: 'load', timeout: T });
  await page.getByText('About this run').waitFor();
  // MLflow 3 opens in the "GenAI" workflow; switch the toggle to "Model training".
  const mt = page.getByText('Model training', { exact: true });
  if (await mt.count()) { await mt.first().click(); await page.waitForTimeout(3000); }
  await page.goto('about:blank');
  await page.goto(`${base}/runs/${run}`, { waitUntil: 'load', timeout: T });
  await page.getByText('Model metrics', { exact: true }).first().waitFor();
  await closeAssistant();
  // The description embeds the forgetting chart (get-artifact URL): wait until it is drawn.
  await page.waitForFunction(() => [...document.images].some(
    i => i.src.includes('forgetting_curves.png') && i.complete && i.naturalWidth > 0), null, { timeout: T });
  const more = page.getByText('Show more', { exact: true });
  if (await more.count()) { await more.first().click(); }
  await page.waitForTimeout(2000);
  await page.screenshot({ path: `${outdir}/mlflow-toy-run.png`, fullPage: false });
  // The experiment's runs, filtered by a tag.
  await page.goto(`${base}/runs`, { waitUntil: 'load', timeout: T });
  await page.waitForTimeout(5000);
  await closeAssistant();
  const search = page.getByPlaceholder(/metrics\.|[Ss]earch/).first();
  await search.fill("tags.`kroncl.adapter` = 'kron'");
  await search.press('Enter');
  await page.waitForTimeout(6000);
  await page.screenshot({ path: `${outdir}/mlflow-toy-runs.png`, clip: { x: 0, y: 0, width: 1440, height: 520 } });
  await browser.close();
})().catch(e => { console.error(e); process.exit(1); });
