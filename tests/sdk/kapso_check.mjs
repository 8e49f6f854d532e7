// SDK compatibility: @kapso/whatsapp-cloud-api (unmodified) talking to
// sendgate's sandbox.
//
// Usage: node kapso_check.mjs http://127.0.0.1:PORT
//
// All checks share one sendgate process and run in order: (d) shows that a
// send naming both a phone and a BSUID teaches nothing, (e) gives sendgate
// the pair through the admin API (SDK_ADMIN, SDK_ADMIN_TOKEN) as an operator
// would, and (f) relies on it. Run after pywa_check.py, whose BSUID template
// refusal needs the phone unknown.
//
// Prints one line per check and `kapso: N passed, M failed`; exits 1 if any
// check failed.
//
// SDK_CHECK_FLIP=1 deliberately expects a wrong error code in (b), to prove
// that a broken expectation makes the run fail.
import { WhatsAppClient, GraphApiError } from "@kapso/whatsapp-cloud-api";

const BASE = (process.argv[2] ?? "http://127.0.0.1:8080").replace(/\/+$/, "");
const PHONE_NUMBER_ID = "106540352242922";
const BSUID = "US.13491208655302741918";
const PHONE = "16315551234";
const USERNAME = "@pablo.m";
const USERNAME_CODE = process.env.SDK_CHECK_FLIP ? 999 : 100;

const client = new WhatsAppClient({
  baseUrl: BASE,
  graphVersion: "v23.0",
  accessToken: "SANDBOX_TOKEN",
});

class CheckFailed extends Error {}
function assert(cond, message) {
  if (!cond) throw new CheckFailed(message);
}

const results = [];
async function check(name, fn) {
  try {
    await fn();
    results.push(true);
    console.log(`PASS kapso ${name}`);
  } catch (e) {
    results.push(false);
    const why = e instanceof CheckFailed ? e.message : `unexpected ${e?.name}: ${e?.message}`;
    console.log(`FAIL kapso ${name}: ${why}`);
  }
}

// The sandbox's log, read through the proxy with plain fetch (bounded).
async function received() {
  const r = await fetch(`${BASE}/_sandbox/received`, { signal: AbortSignal.timeout(10_000) });
  assert(r.ok, `GET /_sandbox/received -> ${r.status}`);
  return r.json();
}
async function sends() {
  return (await received()).filter((e) => e.method === "POST" && e.path.endsWith("/messages"));
}

async function expectGraphError(fn, code) {
  let result;
  try {
    result = await fn();
  } catch (e) {
    assert(e instanceof GraphApiError, `expected GraphApiError, got ${e?.name}: ${e?.message}`);
    assert(e.code === code, `expected error code ${code}, got ${e.code} (${e.message})`);
    return e;
  }
  throw new CheckFailed(`expected GraphApiError ${code}, the send succeeded: ${JSON.stringify(result)}`);
}

const template = (name) => ({ name, language: { code: "en_US" } });

await check("(a) sendText with a BSUID in `to` is delivered as `recipient`", async () => {
  const before = (await sends()).length;
  const res = await client.messages.sendText({ phoneNumberId: PHONE_NUMBER_ID, to: BSUID, body: "hello BSUID from kapso" });
  assert(res?.messages?.[0]?.id?.startsWith("wamid."), `unexpected response ${JSON.stringify(res)}`);
  const after = await sends();
  assert(after.length === before + 1, `expected one new send upstream, got ${after.length - before}`);
  const last = after.at(-1);
  assert(last.outcome === "delivered", `outcome = ${JSON.stringify(last.outcome)} (BSUID in \`to\` is silently dropped)`);
  const body = JSON.parse(last.body);
  assert(body.recipient === BSUID, `recipient = ${JSON.stringify(body.recipient)}`);
  assert(!("to" in body), `body still has to = ${JSON.stringify(body.to)}`);
});

await check("(b) sendText to @pablo.m -> GraphApiError 100", async () => {
  const before = (await received()).length;
  await expectGraphError(
    () => client.messages.sendText({ phoneNumberId: PHONE_NUMBER_ID, to: USERNAME, body: "hello username" }),
    USERNAME_CODE,
  );
  assert((await received()).length === before, "a blocked username send reached the sandbox");
});

await check("(c) spring_sale template to BSUID-only -> GraphApiError 131062", async () => {
  const before = (await sends()).length;
  await expectGraphError(
    () => client.messages.sendTemplate({ phoneNumberId: PHONE_NUMBER_ID, recipient: BSUID, template: template("spring_sale") }),
    131062,
  );
  assert((await sends()).length === before, "a blocked template send reached the sandbox");
});

await check("(d) sendText with both `to` phone and `recipient` BSUID succeeds and teaches nothing", async () => {
  const res = await client.messages.sendText({ phoneNumberId: PHONE_NUMBER_ID, to: PHONE, recipient: BSUID, body: "hello both" });
  assert(res?.messages?.[0]?.id?.startsWith("wamid."), `unexpected response ${JSON.stringify(res)}`);
  const last = (await sends()).at(-1);
  assert(last.outcome === "delivered", `outcome = ${JSON.stringify(last.outcome)}`);
  await expectGraphError(
    () => client.messages.sendTemplate({ phoneNumberId: PHONE_NUMBER_ID, recipient: BSUID, template: template("otp_login") }),
    131062,
  );
});

await check("(e) the operator imports the pair through the admin API", async () => {
  const pair = { bsuid: BSUID, phone: PHONE, number: PHONE_NUMBER_ID };
  const r = await fetch(`${process.env.SDK_ADMIN}/admin/identities`, {
    method: "POST",
    headers: { authorization: `Bearer ${process.env.SDK_ADMIN_TOKEN}` },
    body: JSON.stringify(pair),
    signal: AbortSignal.timeout(10_000),
  });
  assert(r.ok, `POST /admin/identities -> ${r.status}`);
  const summary = await r.json();
  assert(summary.imported === 1, `summary ${JSON.stringify(summary)}`);
});

for (const name of ["spring_sale", "otp_login"]) {
  await check(`(f) ${name} template to BSUID-only now resolves to phone ${PHONE}`, async () => {
    const res = await client.messages.sendTemplate({ phoneNumberId: PHONE_NUMBER_ID, recipient: BSUID, template: template(name) });
    assert(res?.messages?.[0]?.id?.startsWith("wamid."), `unexpected response ${JSON.stringify(res)}`);
    const waId = res?.contacts?.[0]?.waId;
    assert(waId === PHONE, `contacts[0].waId = ${JSON.stringify(waId)}, response ${JSON.stringify(res)}`);
    const last = (await sends()).at(-1);
    assert(last.outcome === "delivered", `outcome = ${JSON.stringify(last.outcome)}`);
  });
}

const passed = results.filter(Boolean).length;
const failed = results.length - passed;
console.log(`kapso: ${passed} passed, ${failed} failed`);
process.exitCode = failed ? 1 : 0;
