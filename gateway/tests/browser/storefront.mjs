// Drives the storefront like a person: open the page, pick the event, click
// two seats, hold them (as a guest: no name needed), see the hold, release
// it. Prints one JSON line with what it saw; exits non-zero on any failure.
// Usage: node storefront.mjs BASE_URL EVENT_NAME SEAT_A SEAT_B SCREENSHOT.png
import { script, seatClass } from "./launch.mjs";

const [base, eventName, seatA, seatB, shot] = process.argv.slice(2);
await script(async (browser, out) => {
  const page = await browser.newPage({ viewport: { width: 1300, height: 900 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(base + "/");
  await page.getByRole("button", { name: new RegExp(eventName) }).click();
  await page.locator("#seat-" + seatA).waitFor();
  out.seats_drawn = await page.locator("#map circle").count();
  await page.locator("#seat-" + seatA).click();
  await page.locator("#seat-" + seatB).click();
  out.selected_class = await page.locator("#seat-" + seatA).getAttribute("class");
  out.selection_text = await page.locator("#selection").innerText();
  await page.click("#hold-btn");
  await page.locator("#hold-title").waitFor();
  out.hold_title = await page.locator("#hold-title").innerText();
  out.hold_seats = await page.locator("#hold-seats").innerText();
  out.expiry = await page.locator("#hold-expiry").innerText();
  // The hold card is drawn before the map is refreshed: wait (bounded) for
  // the map to show the seat as held, then read what it shows.
  await page
    .waitForFunction((id) => document.getElementById("seat-" + id)?.getAttribute("class") === "held", seatA, { timeout: 5000 })
    .catch(() => {});
  out.held_class = await page.locator("#seat-" + seatA).getAttribute("class");
  if (shot) await page.screenshot({ path: shot, fullPage: true });
  // The same seat again is refused with a readable message.
  await page.locator("#seat-" + seatA).click();
  out.click_on_held_class = await page.locator("#seat-" + seatA).getAttribute("class");
  await page.click("#release-btn");
  await page.waitForFunction(() => document.querySelector("#hold-title")?.innerText.includes("released"));
  out.after_release = await page.locator("#hold-title").innerText();
  out.released_class = await seatClass(page, seatA, "available");
  out.page_errors = errors;
});
