// Buys tickets in the storefront like a person: pick the event, click a
// seat, hold it, type an email, pay with the test card, wait for the order
// to be fulfilled and download the PDF; then try another seat with the
// declined test card. Prints one JSON line with what it saw; exits non-zero
// on any failure.
// Usage: node purchase.mjs BASE_URL EVENT_NAME SEAT_OK SEAT_DECLINED PDF_OUT SCREENSHOT.png
import { launch, seatClass } from "./launch.mjs";

const [base, eventName, seatOk, seatDeclined, pdfOut, shot] = process.argv.slice(2);
const browser = await launch();
const out = {};
try {
  const context = await browser.newContext({ viewport: { width: 1300, height: 1000 }, acceptDownloads: true });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(base + "/");
  await page.getByRole("button", { name: new RegExp(eventName) }).click();
  await page.locator("#seat-" + seatOk).waitFor();

  // A paid purchase.
  await page.locator("#seat-" + seatOk).click();
  await page.click("#hold-btn");
  await page.locator("#buy-btn").waitFor();
  await page.click("#buy-btn");
  out.empty_email_message = await page.locator("#message").innerText();
  await page.fill("#email", "heidi@example.com");
  await page.click("#buy-btn");
  await page.locator("#order-status[data-status=fulfilled]").waitFor({ timeout: 30000 });
  out.order_title = await page.locator("#order-title").innerText();
  out.order_status = await page.locator("#order-status").innerText();
  out.tickets = await page.locator("#tickets li").allInnerTexts();
  out.hold_card_hidden = await page.locator("#hold").isHidden();
  out.order_seats = await page.locator("#order-seats").innerText();
  out.sold_class = await seatClass(page, seatOk, "sold");
  if (shot) await page.screenshot({ path: shot, fullPage: true });
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#pdf-link")]);
  out.pdf_name = download.suggestedFilename();
  await download.saveAs(pdfOut);

  // A declined card: the order fails and the seat is available again.
  await page.locator("#seat-" + seatDeclined).click();
  await page.click("#hold-btn");
  await page.locator("#buy-btn").waitFor();
  await page.fill("#card", "4000 0000 0000 0002");
  await page.click("#buy-btn");
  await page.locator("#order-status[data-status=payment_failed]").waitFor({ timeout: 30000 });
  out.declined_status = await page.locator("#order-status").innerText();
  out.declined_note = await page.locator("#order-note").innerText();
  out.declined_seat_class = await seatClass(page, seatDeclined, "available");
  out.page_errors = errors;
  console.log(JSON.stringify(out));
} catch (e) {
  const page = browser.contexts()[0]?.pages()[0];
  if (page) {
    out.message_at_failure = await page.locator("#message").innerText().catch(() => "");
    out.order_at_failure = await page.locator("#order").innerText().catch(() => "");
    if (shot) await page.screenshot({ path: shot + ".failure.png", fullPage: true }).catch(() => {});
  }
  console.log(JSON.stringify({ ...out, failure: String(e) }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
