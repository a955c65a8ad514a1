// Debian's Chromium, headless, for the storefront scripts (playwright-core
// downloads no browser of its own), and what the scripts read alike.
import { chromium } from "playwright-core";

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}

// The class of seat `id` on the map, once it is `cls` (the map is redrawn
// after the card that changed it).
export async function seatClass(page, id, cls) {
  await page.waitForFunction(([i, c]) => document.getElementById("seat-" + i)?.getAttribute("class") === c, [id, cls]);
  return page.locator("#seat-" + id).getAttribute("class");
}

// Runs `body(browser, out)`, then prints `out` as one JSON line; on any
// failure prints what was seen with the failure and exits non-zero. The
// browser is closed either way.
export async function script(body) {
  const browser = await launch();
  const out = {};
  try {
    await body(browser, out);
    console.log(JSON.stringify(out));
  } catch (e) {
    console.log(JSON.stringify({ ...out, failure: String(e) }));
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}
