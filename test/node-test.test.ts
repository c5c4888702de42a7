// idemfetch/testing runs under node:test too: `node --test` over test/node-test/memory-store.ts passes every test (memoryStore and liveMemoryStore).
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { expect, it } from "vitest";

it("the conformance suite passes under node --test against memoryStore", async () => {
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ["--import", "tsx", "--test", "--test-reporter=tap", "test/node-test/memory-store.ts"],
    { timeout: 60_000 },
  );
  const count = (name: string) => Number(new RegExp(`^# ${name} (\\d+)$`, "m").exec(stdout)?.[1]);
  expect(count("tests")).toBeGreaterThanOrEqual(35);
  // Skipped: memoryStore's undeclared live-stream section (liveMemoryStore runs it).
  expect({ pass: count("pass") + count("skipped"), fail: count("fail") }).toEqual({ pass: count("tests"), fail: 0 });
  expect(count("skipped")).toBeLessThan(count("tests") / 4);
});
