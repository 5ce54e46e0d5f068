// Browser tests of the web interface: Debian's headless Chromium driven by
// playwright-core, against a real `rop serve` that scripts/browser-tests.sh
// started (real whisper.cpp, phrase-rule analysis, SQLite). Each role logs
// in and is checked for what it sees and what it is refused, also by direct
// URL; an administrator creates users, a checklist and a table through the
// forms, opens a processed call, plays from a quote and resends a webhook;
// a word form is found in transcripts. A desktop-width screenshot of every
// main page is kept in $UI_ARTIFACTS.

import http from "node:http";
import fs from "node:fs/promises";
import path from "node:path";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const base = process.env.UI_BASE;
const apiKey = process.env.UI_API_KEY;
const adminPassword = process.env.UI_ADMIN_PASSWORD;
const audioFile = process.env.UI_AUDIO;
const artifacts = process.env.UI_ARTIFACTS;
for (const [name, value] of Object.entries({ base, apiKey, adminPassword, audioFile, artifacts })) {
  if (!value) throw new Error(`missing ${name}`);
}
await fs.mkdir(artifacts, { recursive: true });

// --- a webhook receiver on loopback ---------------------------------------
const hooks = [];
const receiver = http.createServer((req, res) => {
  let body = "";
  req.on("data", (chunk) => (body += chunk));
  req.on("end", () => {
    hooks.push({ headers: req.headers, body });
    res.end("ok");
  });
});
await new Promise((resolve) => receiver.listen(0, "127.0.0.1", resolve));
const hookUrl = `http://127.0.0.1:${receiver.address().port}/hook`;

// --- the CRM's side, through the API --------------------------------------
async function api(method, route, body) {
  const headers = { "X-Api-Key": apiKey };
  if (typeof body === "string") headers["Content-Type"] = "application/json";
  const response = await fetch(base + route, { method, headers, body });
  if (!response.ok) throw new Error(`${method} ${route}: ${response.status} ${await response.text()}`);
  return response.json();
}

async function uploadCall(callId, managerId) {
  const form = new FormData();
  form.set("call_id", callId);
  form.set("manager_id", managerId);
  form.set("deal_id", `deal-${callId}`);
  form.set("client_name", "Ирина");
  form.set("file", new Blob([await fs.readFile(audioFile)], { type: "audio/wav" }), "call.wav");
  await api("POST", "/api/v1/calls/audio-upload", form);
}

async function waitForCalls(ids, seconds) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const states = await Promise.all(ids.map((id) => api("GET", `/api/v1/calls/${id}`)));
    if (states.every((c) => c.status === "done")) return states;
    const failed = states.find((c) => c.status === "failed");
    if (failed) throw new Error(`call ${failed.call_id} failed: ${failed.status_reason}`);
    if (Date.now() > deadline) throw new Error(`calls not done in ${seconds}s: ${states.map((c) => c.status)}`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

await api("POST", "/api/v1/settings/managers-update", JSON.stringify({
  managers: [
    { manager_id: "m1", name: "Алексей", surname: "Смирнов" },
    { manager_id: "m2", name: "Ольга", surname: "Петрова" },
    { manager_id: "m3", name: "Павел", surname: "Орлов" },
    { manager_id: "l1", name: "Мария", surname: "Кузнецова" },
  ],
}));
await api("POST", "/api/v1/settings/offices-update", JSON.stringify({
  offices: [{ office_id: "o1", office_title: "Центральный офис", leader_ids: ["l1"], managers_ids: ["m1", "m2"] }],
}));

// --- the browser ------------------------------------------------------------
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--autoplay-policy=no-user-gesture-required"],
});
const failures = [];
let step = "";
async function check(name, body) {
  step = name;
  try {
    await body();
    console.log(`ok   ${name}`);
  } catch (error) {
    failures.push(`${name}: ${error.message}`);
    console.log(`FAIL ${name}\n     ${error.message.split("\n").join("\n     ")}`);
  }
}

async function session(username, password) {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, locale: "ru-RU" });
  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  const external = [];
  // A script, style or frame the Content-Security-Policy blocked.
  page.on("console", (message) => {
    if (message.type() === "error" && /Content Security Policy/i.test(message.text())) {
      external.push(`CSP: ${message.text()}`);
    }
  });
  page.on("request", (request) => {
    const url = request.url();
    if (!url.startsWith(base) && !url.startsWith("data:") && !url.startsWith("blob:")) external.push(url);
  });
  await page.goto(`${base}/dashboard`);
  assert.match(page.url(), /\/login\?next=/, "signed out → login page");
  await page.fill("input[name=username]", username);
  await page.fill("input[name=password]", password);
  await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  assert.ok(page.url().endsWith("/dashboard"), `after login at ${page.url()}`);
  return { context, page, external };
}

async function status(page, route) {
  const response = await page.goto(base + route);
  return response.status();
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(artifacts, `${name}.png`), fullPage: true });
}

const admin = await session("admin", adminPassword);

await check("the empty dashboard tells a new administrator what to do", async () => {
  const text = await admin.page.textContent("main");
  assert.match(text, /Звонков пока нет/);
  assert.ok(await admin.page.isVisible("a[href='/settings/connection']"));
  await shot(admin.page, "01-dashboard-empty");
});

await check("Подключение shows the URL and key with copy buttons, key not editable", async () => {
  await admin.page.goto(`${base}/settings/connection`);
  const key = await admin.page.inputValue("#api-key");
  assert.equal(key, apiKey);
  assert.equal(await admin.page.getAttribute("#api-key", "readonly"), "");
  assert.match(await admin.page.inputValue("#upload-url"), /\/api\/v1\/calls\/audio-upload$/);
  await admin.page.click("button[data-copy=api-key]");
  await admin.page.waitForSelector("button[data-copy=api-key]:has-text('Скопировано')");
  await shot(admin.page, "02-settings-connection");
});

await check("a checklist is created through the form", async () => {
  const page = admin.page;
  await page.goto(`${base}/settings/checklists/new`);
  await page.fill("input[name=name]", "Продажа окон");
  await page.fill("input[name=checklist_id]", "sales");
  const first = page.locator(".stage-row").nth(0);
  await first.locator("input[name=stage_name]").fill("Приветствие");
  await first.locator("textarea[name=stage_examples]").fill("добрый день\nменя зовут");
  await page.click("button.add-row");
  const second = page.locator(".stage-row").nth(1);
  await second.locator("input[name=stage_name]").fill("Бюджет");
  await second.locator("textarea[name=stage_examples]").fill("какой у вас бюджет");
  await page.fill("input[name=webhook_url]", hookUrl);
  await page.fill("input[name=webhook_secret]", "browser-secret");
  await Promise.all([page.waitForNavigation(), page.click("#checklist-form button[type=submit]")]);
  assert.ok(page.url().endsWith("/settings/checklists/sales"), page.url());
  assert.equal(await page.locator(".stage-row").count(), 2);
  await shot(page, "03-settings-checklist");
  // The test webhook goes out signed and is reported on the page.
  const before = hooks.length;
  await page.click("text=Отправить тестовый вебхук");
  await page.waitForSelector("#test-result .alert.ok");
  assert.equal(hooks.length, before + 1);
  assert.ok(hooks.at(-1).headers["x-rop-signature"], "signed");
});

await check("a table is created through the form", async () => {
  const page = admin.page;
  await page.goto(`${base}/settings/tables/new`);
  await page.fill("input[name=name]", "Замер");
  const row = page.locator(".column-row").nth(0);
  await row.locator("input[name=column_key]").fill("premises");
  await row.locator("input[name=column_title]").fill("Помещение");
  await row.locator("select[name=column_type]").selectOption("enum");
  await row.locator("input[name=column_values]").fill("квартира, дом, офис");
  await Promise.all([page.waitForNavigation(), page.click("#table-form button[type=submit]")]);
  assert.match(page.url(), /\/settings\/tables\/TBL_\d+$/);
  assert.equal(await page.inputValue("input[name=column_values]"), "квартира, дом, офис");
  await shot(page, "04-settings-table");
});

await check("users for a leader and a manager are created through the form", async () => {
  const page = admin.page;
  for (const [username, role, crmId] of [["lead", "leader", "l1"], ["seller", "manager", "m1"]]) {
    await page.goto(`${base}/settings/users`);
    await page.fill("#new-user input[name=username]", username);
    await page.fill("#new-user input[name=password]", "пароль-из-браузера");
    await page.selectOption("#new-user select[name=role]", role);
    await page.fill("#new-user input[name=manager_id]", crmId);
    await Promise.all([page.waitForNavigation(), page.click("#new-user button")]);
    assert.ok(await page.isVisible(`td:has-text('${username}')`), `${username} listed`);
  }
  await shot(page, "05-settings-users");
});

// Calls of m1 and m2 (office o1) go through the real pipeline; m3's call is
// declared too short and skipped, so it exists without processing.
await uploadCall("call-m1", "m1");
await uploadCall("call-m2", "m2");
await api("PUT", "/api/v1/settings/connection", JSON.stringify({ min_call_duration_secs: 5, manager_channel: 0 }));
await api("POST", "/api/v1/calls/audio-upload", new URLSearchParams({
  call_id: "call-m3", manager_id: "m3", deal_id: "deal-m3", audio_url: "https://crm.example.ru/a.mp3", duration: "1",
}));

await check("live progress: the list updates without a reload", async () => {
  const page = admin.page;
  await page.goto(`${base}/calls`);
  await shot(page, "06-calls-in-progress");
  await waitForCalls(["call-m1", "call-m2"], 240);
  await page.waitForSelector("tr[data-call=call-m1] .badge.ok", { timeout: 15000 });
});

await check("the call card: transcript, checklist, quote plays from its time, resend", async () => {
  const page = admin.page;
  await page.goto(`${base}/calls/call-m1`);
  assert.ok(await page.locator(".transcript .line").count() >= 3, "transcript lines");
  assert.match(await page.textContent(".checklist"), /Приветствие/);
  const quote = page.locator("button.quote").first();
  const seek = parseFloat(await quote.getAttribute("data-seek"));
  await quote.click();
  await page.waitForFunction(
    (t) => Math.abs(document.getElementById("player").currentTime - t) < 1.0,
    seek,
  );
  // The player streamed the recording with range requests.
  const ranged = await page.evaluate(async (route) => (await fetch(route, { headers: { Range: "bytes=0-15" } })).status, "/calls/call-m1/audio");
  assert.equal(ranged, 206);
  // A click on a transcript line seeks there too.
  const line = page.locator(".transcript button.time").nth(2);
  const lineStart = parseFloat(await line.getAttribute("data-seek"));
  await line.click();
  await page.waitForFunction((t) => Math.abs(document.getElementById("player").currentTime - t) < 1.0, lineStart);
  await shot(page, "07-call-card");
  const delivered = hooks.filter((h) => h.headers["x-rop-event"] === "checklist.result").length;
  assert.ok(delivered >= 1, "the analysis webhook arrived");
  await Promise.all([page.waitForNavigation(), page.locator("#deliveries button:has-text('Отправить заново')").first().click()]);
  const deadline = Date.now() + 20000;
  while (hooks.filter((h) => h.headers["x-rop-event"] === "checklist.result").length <= delivered) {
    if (Date.now() > deadline) throw new Error("the resent webhook did not arrive");
    await new Promise((r) => setTimeout(r, 250));
  }
});

await check("search finds a word form in transcripts", async () => {
  const page = admin.page;
  await page.goto(`${base}/calls`);
  // The dialogue says «в квартире»; the search asks for «квартиры».
  await page.fill("input[name=q]", "квартиры");
  await Promise.all([page.waitForNavigation(), page.click(".filters button.primary")]);
  assert.ok(await page.isVisible("tr[data-call=call-m1]"), "found by another word form");
  await page.fill("input[name=q]", "холодильник");
  await Promise.all([page.waitForNavigation(), page.click(".filters button.primary")]);
  assert.equal(await page.locator("tr[data-call]").count(), 0);
  await shot(page, "08-calls-search");
});

await check("a checklist is tried on a processed call without saving", async () => {
  const page = admin.page;
  await page.goto(`${base}/settings/checklists/sales`);
  await page.selectOption(".try select[name=call_id]", "call-m1");
  await page.click(".try button[type=submit]");
  await page.waitForSelector("#try-result .try-result");
  const text = await page.textContent("#try-result");
  assert.match(text, /Приветствие/);
  assert.match(text, /не сохранён/);
  await shot(page, "09-settings-try-checklist");
});

await check("the administrator's main pages", async () => {
  const page = admin.page;
  for (const [route, name] of [["/dashboard", "09-dashboard"], ["/calls", "10-calls"], ["/managers", "11-managers"],
    ["/managers/m1", "12-manager"], ["/offices", "13-offices"], ["/offices/o1", "14-office"],
    ["/settings/engines", "15-settings-engines"], ["/settings/audit", "16-settings-audit"],
    ["/settings/integrations/zadarma", "17-settings-zadarma"], ["/settings/clients", "18-settings-clients"],
    ["/settings/integrations/amocrm", "20-settings-amocrm"], ["/settings/integrations/bitrix24", "21-settings-bitrix24"],
    ["/telephony", "19-telephony"]]) {
    assert.equal(await status(page, route), 200, route);
    await shot(page, name);
  }
  await page.goto(`${base}/dashboard`);
  assert.equal(await page.textContent("#kpi-analysed"), "2");
  assert.ok(await page.locator(".chart canvas").count() >= 1, "the trend chart is drawn");
  await page.goto(`${base}/settings/audit`);
  const log = await page.textContent("table.audit");
  for (const words of ["Чек-лист создан", "Таблица создана", "Пользователь создан", "Вебхук отправлен заново"]) {
    assert.ok(log.includes(words), words);
  }
  assert.ok(!log.includes("browser-secret"), "no secret in the log");
});

const leader = await session("lead", "пароль-из-браузера");
await check("an office leader sees his office only and no settings", async () => {
  const page = leader.page;
  await page.goto(`${base}/calls`);
  assert.ok(await page.isVisible("tr[data-call=call-m1]"));
  assert.ok(await page.isVisible("tr[data-call=call-m2]"));
  assert.equal(await page.locator("tr[data-call=call-m3]").count(), 0);
  assert.equal(await page.locator("header a[href='/settings']").count(), 0);
  assert.equal(await status(page, "/calls/call-m3"), 404);
  assert.equal(await status(page, "/settings/connection"), 403);
  assert.equal(await status(page, "/settings/users"), 403);
  assert.equal(await status(page, "/offices/o1"), 200);
  await shot(page, "17-leader-office");
});

const seller = await session("seller", "пароль-из-браузера");
await check("a manager sees his own calls only", async () => {
  const page = seller.page;
  await page.goto(`${base}/calls`);
  assert.ok(await page.isVisible("tr[data-call=call-m1]"));
  assert.equal(await page.locator("tr[data-call=call-m2]").count(), 0);
  assert.equal(await status(page, "/calls/call-m2"), 404);
  assert.equal(await status(page, "/calls/call-m2/audio"), 404);
  assert.equal(await status(page, "/offices"), 403);
  assert.equal(await status(page, "/settings"), 403);
  assert.equal(await status(page, "/managers/m2"), 404);
  await page.goto(`${base}/calls/call-m1`);
  assert.equal(await page.locator("#deliveries button").count(), 0, "no resend for a manager");
  await shot(page, "18-manager-card");
});

await check("no page asked for anything outside the server", async () => {
  const external = [...admin.external, ...leader.external, ...seller.external];
  assert.deepEqual(external, []);
});

await check("logging out ends the session", async () => {
  const page = seller.page;
  await page.goto(`${base}/calls`);
  await Promise.all([page.waitForNavigation(), page.click("header button:has-text('Выйти')")]);
  assert.match(page.url(), /\/login$/);
  await page.goto(`${base}/calls`);
  assert.match(page.url(), /\/login\?next=/);
});

await browser.close();
receiver.close();
if (failures.length) {
  console.error(`\n${failures.length} browser check(s) failed (last step: ${step}):\n- ${failures.join("\n- ")}`);
  process.exit(1);
}
console.log(`\nall browser checks passed; screenshots in ${artifacts}`);
