import assert from "node:assert/strict";
import { adaptiveCadence, chooseCadence, fixedCadence, learnedCadence } from "../../decode/cadence.ts";

Deno.test("fixed cadence: the counts asked for, at least one iteration in the first submit", () => {
  const c = fixedCadence(16, 3);
  assert.deepEqual([c.first(), c.before(), c.behind()], [16, 16, 3]);
  const lag = fixedCadence(0, 1);
  assert.deepEqual([lag.first(), lag.before(), lag.behind()], [1, 0, 1]);
  const none = fixedCadence(0, 0);
  assert.deepEqual([none.first(), none.before(), none.behind()], [1, 1, 0], "every read shows an iteration");
  assert.equal(fixedCadence(13, 3, 16).first(), 16);
  assert.equal(chooseCadence({}, "ar", { iterationsPerReadback: 4 }, 3).behind(), 3);
  assert.equal(
    chooseCadence({}, "ar", {}, 3).before(),
    0,
    "no iterationsPerReadback: adaptive, nothing before a read",
  );
});

// The adaptive cadence from synthetic timings (milliseconds): a read issued at `issued` whose call
// returned at `returned` (it blocks while the GPU works), then resolved ~10 ms later.
Deno.test("adaptive cadence: grows while the GPU idles through the wait, fits the wait when busy", () => {
  const model = {};
  const c = adaptiveCadence(model, "jacobi n=16", 2, 8);
  assert.deepEqual([c.first(), c.before(), c.behind()], [2, 0, 2]);
  // Prefill's read, two iterations behind it, resolved after the wait.
  c.issued(0, 3);
  c.submitted(2);
  c.resolved(13);
  // The next read returns at once: the two iterations ended inside the wait; one more next time.
  c.issued(14, 14.1);
  assert.equal(c.behind(), 3);
  c.submitted(3);
  c.resolved(24.1);
  // Busy until 29.1: t = (29.1 - 14.1) / 3 = 5 ms per iteration; ceil(10 ms wait / 5) = 2.
  c.issued(25, 29.1);
  assert.equal(c.behind(), 2);
  // Near the end of a budget fewer iterations than asked went behind: an idle read teaches nothing.
  c.submitted(1);
  c.resolved(39);
  c.issued(40, 40.05);
  assert.equal(c.behind(), 2);
  // What it learned carries over to the model's next generation of the same loop, not to others.
  assert.equal(learnedCadence(model, "jacobi n=16")?.behind, 2);
  assert.equal(adaptiveCadence(model, "jacobi n=16", 5, 8).first(), 2);
  assert.equal(adaptiveCadence(model, "ar", 5, 8).first(), 5);
  assert.equal(adaptiveCadence({}, "jacobi n=16", 5, 8).first(), 5);
  assert.equal(learnedCadence({}, "ar"), undefined);
});

Deno.test("adaptive cadence: never more than the cap, never fewer than one", () => {
  const c = adaptiveCadence({}, "ar", 3, 4);
  let now = 0;
  c.issued(now, now + 1);
  for (let i = 0; i < 10; i++) {
    c.submitted(c.behind());
    now += 12;
    c.issued(now, now + 0.01); // always idle
  }
  assert.equal(c.behind(), 4);
  const slow = adaptiveCadence({}, "ar", 3, 4);
  slow.issued(0, 1);
  slow.submitted(3);
  slow.resolved(11);
  slow.issued(12, 100); // 33 ms per iteration: one outlasts the wait
  assert.equal(slow.behind(), 1);
});

Deno.test("where reads are cheap (a browser), one iteration behind each read, whatever the timings", () => {
  const model = {};
  const c = adaptiveCadence(model, "jacobi n=16", 2, 32, 0.1);
  assert.deepEqual([c.first(), c.before(), c.behind()], [1, 0, 1]);
  // Reads that return at once (as every browser read does) would grow a blocking runtime's count.
  let t = 0;
  for (let i = 0; i < 20; i++) {
    c.issued(t, t + 0.01);
    c.submitted(c.behind());
    c.resolved(t + 5);
    t += 6;
  }
  assert.equal(c.behind(), 1);
  const blocking = adaptiveCadence({}, "jacobi n=16", 2, 32, 10);
  t = 0;
  for (let i = 0; i < 20; i++) {
    blocking.issued(t, t + 0.01);
    blocking.submitted(blocking.behind());
    blocking.resolved(t + 5);
    t += 6;
  }
  assert.ok(blocking.behind() > 10, `a blocking runtime's idle reads grow it (${blocking.behind()})`);
});
