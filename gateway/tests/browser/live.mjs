// The storefront follows the seat map live: open the page on the event,
// wait for its live feed, then hold a seat from elsewhere (another guest,
// through the JSON API) and measure how long the page takes to show it
// held, counting the seat-map polls it made meanwhile (none while the
// feed is up). Prints one JSON line; exits non-zero on any failure.
// Usage: node live.mjs BASE_URL EVENT_NAME SEAT
import { script } from "./launch.mjs";

const [base, eventName, seat] = process.argv.slice(2);
await script(async (browser, out) => {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  let polls = 0;
  page.on("request", (r) => { if (/\/seats(\/status)?$/.test(new URL(r.url()).pathname)) polls++; });
  await page.goto(base + "/");
  await page.getByRole("button", { name: new RegExp(eventName) }).click();
  await page.locator("#seat-" + seat).waitFor();
  await page.waitForFunction(() => document.body.dataset.live === "open", null, { timeout: 5000 });
  out.class_before = await page.locator("#seat-" + seat).getAttribute("class");
  const eventId = await page.evaluate(() => current.event_id);
  // Another customer holds the seat.
  const guest = await (await fetch(base + "/api/auth/guest", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" })).json();
  polls = 0;
  const started = Date.now();
  const held = await fetch(base + "/api/events/" + eventId + "/holds", {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: "Bearer " + guest.access_token, "Idempotency-Key": crypto.randomUUID() },
    body: JSON.stringify({ seat_ids: [seat] }),
  });
  out.hold_status = held.status;
  if (!held.ok) throw new Error("the hold was refused: " + (await held.text()));
  await page.waitForFunction((id) => document.getElementById("seat-" + id)?.getAttribute("class") === "held", seat, { timeout: 5000 });
  out.shown_after_ms = Date.now() - started;
  out.polls_meanwhile = polls;
  out.live = await page.evaluate(() => document.body.dataset.live);
  out.page_errors = errors;
});
