// The shipped conformance suite (idemfetch/testing) under node:test, against memoryStore: run by test/node-test.test.ts.
import * as nodeTest from "node:test";
import { memoryStore } from "../../src/store.js";
import { nodeTestApi, testStore } from "../../src/testing.js";

testStore("memoryStore under node:test", () => memoryStore(), nodeTestApi(nodeTest));
