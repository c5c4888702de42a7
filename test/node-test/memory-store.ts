// The shipped conformance suite (idemfetch/testing) under node:test, against memoryStore: run by test/node-test.test.ts.
import * as nodeTest from "node:test";
import { memoryStore } from "../../src/memory-store.ts";
import { nodeTestApi, testStore } from "../../src/testing.ts";

testStore("memoryStore under node:test", () => memoryStore(), { ...nodeTestApi(nodeTest), live: true });
