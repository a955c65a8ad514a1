// A person with an account: signs up in the storefront, buys a seat, finds
// the order under "My orders"; a second browser (no cookies) can neither
// fetch that order nor see it; the person signs out, fumbles the password,
// tries to sign up again, signs in and still finds the order. Prints one
// JSON line with what it saw; exits non-zero on any failure.
// Usage: node account.mjs BASE_URL EVENT_NAME SEAT EMAIL PASSWORD SCREENSHOT.png
import { launch } from "./launch.mjs";

const [base, eventName, seat, email, password, shot] = process.argv.slice(2);
const browser = await launch();
const out = {};
const errors = [];
const pages = [];
async function open(url) {
  const context = await browser.newContext({ viewport: { width: 1300, height: 1000 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => errors.push(String(e)));
  pages.push(page);
  await page.goto(url);
  return page;
}
// Fills in the open sign-in or sign-up form and submits it.
async function submitAuth(page, mail, pass) {
  await page.fill("#auth-email", mail);
  await page.fill("#auth-password", pass);
  await page.click("#auth-submit");
}
// What the form says back, once it says something.
async function authMessage(page) {
  await page.locator("#auth-message").filter({ hasText: /\S/ }).waitFor();
  return page.locator("#auth-message").innerText();
}
// "My orders" has been (re)loaded with `count` orders.
const ordersLoaded = (page, count) =>
  page.waitForFunction((n) => document.getElementById("my-orders")?.dataset.count === String(n), count, { timeout: 15000 });

try {
  const page = await open(base + "/");
  await page.locator("#sign-up-btn").waitFor();
  await ordersLoaded(page, 0);
  out.who_before = await page.locator("#who").innerText();
  out.orders_before = await page.locator("#my-orders").innerText();

  // Sign up: a too-short password is refused with the server's words.
  await page.click("#sign-up-btn");
  await submitAuth(page, email, "short");
  out.short_password_message = await authMessage(page);
  await page.fill("#auth-password", password);
  await page.fill("#auth-name", "Judy");
  await page.click("#auth-submit");
  await page.locator("#sign-out-btn").waitFor();
  out.who = await page.locator("#who").innerText();
  out.sign_in_hidden = await page.locator("#sign-in-btn").isHidden();
  out.auth_form_hidden = await page.locator("#auth").isHidden();

  // Hold a seat and buy it with the test card.
  await page.getByRole("button", { name: new RegExp(eventName) }).click();
  await page.locator("#seat-" + seat).click();
  await page.click("#hold-btn");
  await page.locator("#buy-btn").waitFor();
  out.prefilled_email = await page.locator("#email").inputValue();
  await page.fill("#card", "4242 4242 4242 4242");
  await page.click("#buy-btn");
  await page.locator("#order-status[data-status=fulfilled]").waitFor({ timeout: 30000 });
  out.order_title = await page.locator("#order-title").innerText();

  // "My orders" lists it, fulfilled, with a PDF that downloads.
  const mine = page.locator("#my-orders li").filter({ has: page.locator(".status[data-status=fulfilled]") });
  await mine.first().waitFor({ timeout: 15000 });
  out.my_orders = await page.locator("#my-orders li").allInnerTexts();
  out.order_id = await mine.first().getAttribute("data-order");
  out.order_number = await mine.first().locator(".number").innerText();
  const href = await mine.first().locator("a").getAttribute("href");
  out.my_pdf = await page.evaluate(async (h) => {
    const r = await fetch(h);
    const b = new Uint8Array(await r.arrayBuffer());
    return { status: r.status, head: String.fromCharCode(...b.slice(0, 5)) };
  }, href);
  if (shot) await page.screenshot({ path: shot, fullPage: true });

  // Another browser, no cookies: a guest of its own, and the order is not theirs.
  const other = await open(base + "/");
  await ordersLoaded(other, 0);
  out.other_who = await other.locator("#who").innerText();
  out.other_fetch_status = await other.evaluate(async (id) => (await fetch("/api/orders/" + id)).status, out.order_id);
  out.other_pdf_status = await other.evaluate(async (id) => (await fetch("/api/orders/" + id + "/tickets.pdf")).status, out.order_id);
  out.other_my_orders = await other.locator("#my-orders").innerText();
  out.other_sees_order = await other.locator(`#my-orders li[data-order="${out.order_id}"]`).count();

  // Sign out: a guest again, with no orders.
  await page.click("#sign-out-btn");
  await page.locator("#sign-in-btn").waitFor();
  await ordersLoaded(page, 0);
  out.who_after_sign_out = await page.locator("#who").innerText();
  out.orders_after_sign_out = await page.locator("#my-orders").innerText();

  // A wrong password, then the same email signing up again: plain words.
  await page.click("#sign-in-btn");
  out.name_hidden_on_sign_in = await page.locator("#auth-name").isHidden();
  await submitAuth(page, email, password + " nope");
  out.bad_password_message = await authMessage(page);
  await page.click("#sign-up-btn");
  await submitAuth(page, email, password);
  out.email_taken_message = await authMessage(page);

  // Signing in again brings the order back.
  await page.click("#sign-in-btn");
  await submitAuth(page, email, password);
  await page.locator("#sign-out-btn").waitFor();
  await page.locator(`#my-orders li[data-order="${out.order_id}"]`).waitFor({ timeout: 15000 });
  out.who_after_sign_in = await page.locator("#who").innerText();
  out.orders_after_sign_in = await page.locator("#my-orders li").allInnerTexts();
  out.page_errors = errors;
  console.log(JSON.stringify(out));
} catch (e) {
  for (const [i, p] of pages.entries()) {
    out["auth_message_at_failure_" + i] = await p.locator("#auth-message").innerText().catch(() => "");
    out["message_at_failure_" + i] = await p.locator("#message").innerText().catch(() => "");
    if (shot) await p.screenshot({ path: shot + ".failure-" + i + ".png", fullPage: true }).catch(() => {});
  }
  console.log(JSON.stringify({ ...out, page_errors: errors, failure: String(e) }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
