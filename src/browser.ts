// The browser bundle (dist/browser/idemfetch.js): install(), the IndexedDB store, Web Locks and the fetch wrapper in one ES module.
export { type IndexedDBStoreOptions, indexedDBStore } from "../adapters/indexeddb.ts";
export * from "./index.ts";
export { type InstallOptions, install, type Uninstall, type WebLocksOptions, withWebLocks } from "./install-browser.ts";
