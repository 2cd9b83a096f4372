// The registry's adapter versions as MLflow's UI shows them, checked in headless Chromium.
// usage: node mlflow_models_check.js PORT EXP_ID RUN_ID OUTDIR MODEL [MODEL...]
// Exits 1 naming what is missing: the Models page must list every MODEL with the alias
// "production" on one of them, the first MODEL's page its versions with kroncl's tags, and the
// run page its logged models linked to the registered versions. Screenshots go to OUTDIR.
const { chromium } = require('playwright-core');
const [port, exp, run, outdir, ...models] = process.argv.slice(2);
const base = `http://127.0.0.1:${port}/#`;
const T = 120000;
const missing = [];

async function open(page, path, marker) {
  await page.goto(base + path, { waitUntil: 'load', timeout: T });
  await page.getByText(marker, { exact: false }).first().waitFor({ timeout: T });
  // Close the "MLflow Assistant" side panel (it opens a little after the page, a third of the width).
  await page.waitForTimeout(8000);
  await page.keyboard.press('Escape');  // a "new Model Registry UI" promotion dialog, when shown
  for (const b of await page.locator('button[aria-label="Close"]').all()) {
    const at = await b.boundingBox();
    if (at && at.x > 1000) { await b.click(); break; }  // the assistant's, at the right edge
  }
  await page.waitForTimeout(2000);
  return page.innerText('body');
}

function expect(where, text, wanted) {
  const flat = text.replace(/\s+/g, ' ');  // the UI renders some spaces as no-break spaces
  for (const w of wanted) if (!flat.includes(w)) missing.push(`${where}: "${w}"`);
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 }, deviceScaleFactor: 1 });
  page.setDefaultTimeout(T);

  let text = await open(page, '/models', 'Registered Models');
  await page.getByText(models[0]).first().waitFor();
  text = await page.innerText('body');
  expect('Models page', text, [...models, '@ production']);
  await page.screenshot({ path: `${outdir}/mlflow-models-page.png`, clip: { x: 0, y: 0, width: 1400, height: 420 } });

  text = await open(page, `/models/${models[0]}`, 'Versions');
  expect(`${models[0]} page`, text, ['Version 1', 'Version 2', 'kroncl.ref', 'kroncl.sha256', '@ production']);

  text = await open(page, `/experiments/${exp}/runs/${run}`, 'About this run');
  const n = models.length * 2;  // an fp32 and a quantized version per task
  // Each logged model row links its registered version ("<name> v1") in the last column.
  expect('run page', text, [`Logged models (${n})`, ...models.flatMap(m => [`${m} v1`, `${m} v2`])]);
  const box = page.getByText(`Logged models (${n})`).first().locator('xpath=../..');
  await box.screenshot({ path: `${outdir}/mlflow-run-logged-models.png` });
  await browser.close();
  if (missing.length) { console.error('missing in the UI:\n  ' + missing.join('\n  ')); process.exit(1); }
  console.log(`ok: Models page lists ${models.join(', ')} with @production; the run page links ${n} logged models`);
})().catch(e => { console.error(e); process.exit(1); });
