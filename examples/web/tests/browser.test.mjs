// The demo page in a real headless Chromium (Debian's, driven by playwright-core), against a
// real server: tests/test_browser.py starts `grpc-serverfn serve examples/demo.py:fns` with
// this page as its --web-root, and runs this file with node --test. Set by it:
//   APP_URL           the page, served by the server's web port
//   ALLOWED_URL       the same page on another origin that --cors-origin lets in
//   DENIED_URL        the same page on an origin it does not
//   CHAT_MESSAGE, EXPECTED_REPLY    a message, and the demo's whole reply to it
//   LONG_MESSAGE, LONG_REPLY        one whose reply streams for several seconds
//   ARTIFACTS         where screenshots go
import assert from "node:assert/strict";
import { mkdir } from "node:fs/promises";
import { connect, createServer } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { chromium } from "playwright-core";

const { APP_URL, ALLOWED_URL, DENIED_URL, CHAT_MESSAGE, EXPECTED_REPLY, ARTIFACTS } = process.env;
const { LONG_MESSAGE, LONG_REPLY } = process.env;
const PROTOCOLS = ["connect", "connect-binary", "grpc-web"];
const TIMEOUT = 20_000;
const serverOrigin = new URL(APP_URL).origin;

let browser;
before(async () => {
  await mkdir(ARTIFACTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    // As root Chromium needs --no-sandbox; the rest keep it off a network there is none of.
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});
after(async () => browser?.close());

async function open(url) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  const errors = [];
  page.on("pageerror", (error) => errors.push(error));
  page.on("console", (message) => {
    if (message.type() === "error") console.error(`[page ${url}] ${message.text()}`);
  });
  await page.goto(url);
  return { context, page, errors };
}

function withProtocol(url, protocol, extra = {}) {
  const address = new URL(url);
  address.searchParams.set("protocol", protocol);
  for (const [key, value] of Object.entries(extra)) address.searchParams.set(key, value);
  return address.href;
}

const reply = (page) => page.getByTestId("reply");

/** The reply is still streaming: what the test does next happens in the middle of it. */
async function streaming(page) {
  assert.equal(await reply(page).getAttribute("data-status"), "streaming", "the reply ended too soon");
}

/** Waits for the chat reply to end, and says why when it ended otherwise than done. */
async function replyEnded(page) {
  await page.locator("[data-testid=reply][data-status=done], [data-testid=reply][data-status=failed]").waitFor();
  const status = await reply(page).getAttribute("data-status");
  const alert = await page.getByRole("region", { name: "Chat" }).getByRole("alert").allTextContents();
  assert.equal(status, "done", `the reply ended ${status}: ${alert.join(" ")}`);
}

/** The reply's text once it has not changed for half a second. */
async function settledReply(page) {
  let text = await reply(page).textContent();
  for (;;) {
    await page.waitForTimeout(500);
    const now = await reply(page).textContent();
    if (now === text) return text;
    text = now;
  }
}

async function sendChat(page, message) {
  await page.getByLabel("Message").fill(message);
  await page.getByRole("button", { name: "Send" }).click();
}

async function waitForWords(page, count) {
  await page.waitForFunction(
    (count) => document.querySelector("[data-testid=reply]").textContent.split(" ").length > count,
    count,
  );
}

/** A TCP proxy to `target`'s host and port whose open connections `cut()` drops. */
async function tcpProxy(target) {
  const sockets = new Set();
  let accepted = 0;
  const server = createServer((client) => {
    accepted += 1;
    const upstream = connect(Number(target.port), target.hostname);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket));
      socket.on("error", () => {});
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  server.unref(); // a failed test must not keep node running
  const url = new URL(target.href);
  url.port = String(server.address().port);
  return {
    url: url.href,
    connections: () => accepted,
    cut: () => sockets.forEach((socket) => socket.destroy()),
    close: () => {
      sockets.forEach((socket) => socket.destroy());
      server.close();
    },
  };
}

function csv(records) {
  const lines = ["id,name"];
  for (let index = 0; index < records; index++) lines.push(`${index},record ${index}`);
  return Buffer.from(lines.join("\n"));
}

// Each test has a browser context of its own; the groups run at once, the tests of a group
// one after another (six pages at a time, on two cores).
describe("the demo page", { concurrency: true }, () => {
for (const protocol of PROTOCOLS) {
  describe(`over ${protocol}`, () => {
    test("the progress bar reaches 100 and done", async () => {
      const { context, page, errors } = await open(withProtocol(APP_URL, protocol));
      assert.equal(await page.getByTestId("protocol").textContent(), protocol);
      const progress = page.getByRole("region", { name: "Progress" });
      await progress.getByRole("button", { name: "Start" }).click();
      await progress.getByTestId("progress").filter({ hasText: /^100$/ }).waitFor();
      assert.equal(await progress.locator("progress").evaluate((bar) => bar.value), 100);
      await page.screenshot({ path: join(ARTIFACTS, `progress-${protocol}.png`), fullPage: true });
      assert.deepEqual(errors, []);
      await context.close();
    });

    test("the chat reply streams in, whole", async () => {
      const { context, page } = await open(withProtocol(APP_URL, protocol));
      const seen = [];
      await page.exposeFunction("recordReply", (text) => seen.push(text));
      await page.evaluate(() => {
        const node = document.querySelector("[data-testid=reply]");
        new MutationObserver(() => window.recordReply(node.textContent)).observe(node, {
          childList: true,
          characterData: true,
          subtree: true,
        });
      });
      await sendChat(page, CHAT_MESSAGE);
      await replyEnded(page);
      assert.equal(await reply(page).textContent(), EXPECTED_REPLY);
      // It arrived token by token: the page showed many partial replies on the way.
      assert.ok(seen.filter((text) => text !== "" && text !== EXPECTED_REPLY).length > 10, seen.length);
      await context.close();
    });

    test("an invalid message shows the field violation", async () => {
      const { context, page } = await open(withProtocol(APP_URL, protocol));
      await sendChat(page, "");
      const alert = page.getByRole("region", { name: "Chat" }).getByRole("alert");
      await alert.waitFor();
      assert.equal(await alert.getAttribute("data-code"), "3"); // INVALID_ARGUMENT
      assert.match(await alert.locator("li").first().textContent(), /^message: String should have at least 1 character/);
      await page.screenshot({ path: join(ARTIFACTS, `invalid-${protocol}.png`), fullPage: true });
      await context.close();
    });
  });
}

describe("leaving a call", () => {
  test("closing the CSV panel mid-job aborts the call (the server logs its finally)", async () => {
    const { context, page } = await open(withProtocol(APP_URL, "connect"));
    await page.getByLabel("CSV file").setInputFiles({ name: "big.csv", mimeType: "text/csv", buffer: csv(5_000) });
    await page.getByTestId("file-progress").filter({ hasText: /^(1|2|3)00 of 5000 records$/ }).waitFor();
    await page.getByRole("button", { name: "Close" }).click();
    await context.close();
  });

  test("Cancel aborts the call over gRPC-Web", async () => {
    const { context, page } = await open(withProtocol(APP_URL, "grpc-web"));
    await page.getByLabel("CSV file").setInputFiles({ name: "big.csv", mimeType: "text/csv", buffer: csv(4_000) });
    await page.getByTestId("file-progress").filter({ hasText: /^(1|2|3)00 of 4000 records$/ }).waitFor();
    await page.getByRole("button", { name: "Cancel" }).click();
    await page.waitForTimeout(300);
    const shown = await page.getByTestId("file-progress").textContent();
    assert.match(shown, /00 of 4000 records$/);
    assert.equal(await page.getByRole("region", { name: "CSV" }).getByRole("alert").count(), 0);
    await context.close();
  });
});

describe("a resumable reply", () => {
  test("goes on from where it was after a page reload", async () => {
    const { context, page } = await open(withProtocol(APP_URL, "connect"));
    await sendChat(page, LONG_MESSAGE);
    await waitForWords(page, 8);
    await streaming(page);
    await page.reload();
    const before = await reply(page).textContent();
    assert.ok(LONG_REPLY.startsWith(before), before); // the text so far, kept across the reload
    await replyEnded(page);
    assert.equal(await reply(page).textContent(), LONG_REPLY);
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);
    await page.screenshot({ path: join(ARTIFACTS, "chat-after-reload.png"), fullPage: true });
    await context.close();
  });

  test("goes on after the browser goes offline and back", async (t) => {
    // The page reaches the server through a proxy whose connections the "network" cuts:
    // Chromium's offline mode alone fails new requests but leaves an open stream be.
    const proxy = await tcpProxy(new URL(APP_URL));
    t.after(() => proxy.close());
    const { context, page } = await open(withProtocol(proxy.url, "connect-binary"));
    await sendChat(page, LONG_MESSAGE);
    await waitForWords(page, 8);
    await streaming(page);
    await context.setOffline(true);
    proxy.cut();
    const atCut = await settledReply(page); // what was on its way before the cut may still show
    await page.waitForTimeout(1_000);
    assert.equal(await reply(page).textContent(), atCut); // nothing arrives while offline
    await context.setOffline(false);
    await replyEnded(page);
    assert.equal(await reply(page).textContent(), LONG_REPLY);
    assert.ok(proxy.connections() > 1, "the page never reconnected");
    await context.close();
  });
});

describe("pages on other origins", () => {
  test("work where --cors-origin allows them", async () => {
    const { context, page } = await open(withProtocol(ALLOWED_URL, "connect", { server: serverOrigin }));
    const progress = page.getByRole("region", { name: "Progress" });
    await progress.getByRole("button", { name: "Start" }).click();
    await progress.getByTestId("progress").filter({ hasText: /^100$/ }).waitFor();
    await context.close();
  });

  test("fail where it does not", async () => {
    const { context, page } = await open(withProtocol(DENIED_URL, "connect", { server: serverOrigin }));
    const progress = page.getByRole("region", { name: "Progress" });
    await progress.getByRole("button", { name: "Start" }).click();
    await progress.getByRole("alert").waitFor();
    assert.equal(await progress.getByTestId("progress").textContent(), "0");
    await context.close();
  });
});
});
