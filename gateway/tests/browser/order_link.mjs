// A guest's purchase and the emailed link that opens it again.
//   buy:  a guest (never signs in) holds a seat, buys it with the test card
//         and sees the order under "My orders".
//   open: a fresh browser (no cookies) opens the emailed link, sees the
//         order fulfilled with its seat, downloads the PDF; the same link
//         with a tampered secret says the order is not found.
// Prints one JSON line with what it saw; exits non-zero on any failure.
// Usage: node order_link.mjs BASE_URL EVENT_NAME buy SEAT EMAIL
//        node order_link.mjs BASE_URL EVENT_NAME open LINK PDF_OUT SCREENSHOT.png
import { launch } from "./launch.mjs";

const [base, eventName, mode, ...rest] = process.argv.slice(2);
const browser = await launch();
const out = {};
const errors = [];
let page;
try {
  const context = await browser.newContext({ viewport: { width: 1300, height: 1000 }, acceptDownloads: true });
  page = await context.newPage();
  page.on("pageerror", (e) => errors.push(String(e)));
  if (mode === "buy") {
    const [seat, email] = rest;
    await page.goto(base + "/");
    await page.getByRole("button", { name: new RegExp(eventName) }).click();
    await page.locator("#seat-" + seat).click();
    await page.click("#hold-btn");
    await page.locator("#buy-btn").waitFor();
    await page.fill("#email", email);
    await page.click("#buy-btn");
    await page.locator("#order-status[data-status=fulfilled]").waitFor({ timeout: 30000 });
    out.who = await page.locator("#who").innerText();
    out.order_title = await page.locator("#order-title").innerText();
    const mine = page.locator("#my-orders li").filter({ has: page.locator(".status[data-status=fulfilled]") });
    await mine.first().waitFor({ timeout: 15000 });
    out.order_id = await mine.first().getAttribute("data-order");
    out.my_orders = await page.locator("#my-orders li").allInnerTexts();
  } else if (mode === "open") {
    const [link, pdfOut, shot] = rest;
    await page.goto(link);
    await page.locator("#linked-status[data-status=fulfilled]").waitFor({ timeout: 15000 });
    out.linked_number = await page.locator("#linked-number").innerText();
    out.linked_event = await page.locator("#linked-event").innerText();
    out.linked_status = await page.locator("#linked-status").innerText();
    out.linked_seats = await page.locator("#linked-seats").innerText();
    out.linked_tickets = await page.locator("#linked-tickets li").evaluateAll((ls) => ls.map((l) => l.dataset.seat));
    out.linked_http_status = await page.locator("#linked-order").getAttribute("data-http-status");
    out.pdf_href = await page.locator("#linked-pdf").getAttribute("href");
    if (shot) await page.screenshot({ path: shot, fullPage: true });
    const [download] = await Promise.all([page.waitForEvent("download"), page.click("#linked-pdf")]);
    out.pdf_name = download.suggestedFilename();
    await download.saveAs(pdfOut);
    // This browser's own orders: a guest of its own, with none.
    await page.waitForFunction(() => document.getElementById("my-orders")?.dataset.count !== undefined);
    out.own_orders = await page.locator("#my-orders").innerText();

    // The same link with a tampered secret.
    const bad = new URL(link);
    const s = bad.searchParams.get("secret");
    bad.searchParams.set("secret", (s[0] === "A" ? "B" : "A") + s.slice(1));
    await page.goto(bad.toString());
    await page.locator("#linked-order[data-status=not_found]").waitFor({ timeout: 15000 });
    out.tampered_http_status = await page.locator("#linked-order").getAttribute("data-http-status");
    out.tampered_message = await page.locator("#linked-message").innerText();
    out.tampered_pdf_link = await page.locator("#linked-pdf").count();
    const badPdf = "/api/order-links/" + bad.searchParams.get("order") + "/tickets.pdf?secret=" + encodeURIComponent(bad.searchParams.get("secret"));
    out.tampered_pdf_status = await page.evaluate(async (u) => (await fetch(u)).status, badPdf);
  } else {
    throw new Error("mode is buy or open, not " + mode);
  }
  out.page_errors = errors;
  console.log(JSON.stringify(out));
} catch (e) {
  if (page) {
    out.message_at_failure = await page.locator("#message").innerText().catch(() => "");
    out.linked_at_failure = await page.locator("#linked-order").innerText().catch(() => "");
  }
  console.log(JSON.stringify({ ...out, page_errors: errors, failure: String(e) }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
