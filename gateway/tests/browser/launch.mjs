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
