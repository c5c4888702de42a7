// The shipped conformance suite (idemfetch/testing) bound to vitest, for this repository's own store tests.
import { afterAll, beforeAll, describe, it } from "vitest";
import type { IdempotencyStore } from "../src/store.ts";
import { testStore as suite, type TestStoreOptions } from "../src/testing.ts";

export type { TestStoreOptions } from "../src/testing.ts";

export function testStore(
  name: string,
  makeStore: () => Promise<IdempotencyStore> | IdempotencyStore,
  options: TestStoreOptions = {},
): void {
  suite(name, makeStore, { describe, it, beforeAll, afterAll, ...options });
}
