// The shipped conformance suite (idemfetch/testing) under node:test, against memoryStore: run by test/node-test.test.ts.
import * as nodeTest from "node:test";
import { liveMemoryStore } from "../../src/memory-live.ts";
import { memoryStore } from "../../src/memory-store.ts";
import { nodeTestApi, testStore } from "../../src/testing.ts";

testStore("memoryStore under node:test", () => memoryStore(), nodeTestApi(nodeTest));
testStore("liveMemoryStore under node:test", () => liveMemoryStore(), { ...nodeTestApi(nodeTest), live: true });
