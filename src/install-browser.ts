// install() for browsers, workers and edge runtimes: fetch and XMLHttpRequest (so axios and older libraries too), no Node built-ins.
import { FetchInterceptor } from "@mswjs/interceptors/fetch/web";
import { XMLHttpRequestInterceptor } from "@mswjs/interceptors/XMLHttpRequest/web";
import { createInstall, type InstallOptions, type Uninstall } from "./install.ts";

export type { InstallOptions, Uninstall } from "./install.ts";
export { type WebLocksOptions, withWebLocks } from "./web-locks.ts";

/**
 * Intercepts fetch and XMLHttpRequest: keyed requests (and, in pages, double-clicked POST/PUT/PATCH/DELETE)
 * coalesce, replay or answer 409; the rest pass untouched. Returns `uninstall()`.
 */
export const install: (options?: InstallOptions) => Uninstall = createInstall({
  // Where there is no XMLHttpRequest (workers, edge), its interceptor stands aside by itself.
  interceptors: () => [new FetchInterceptor(), new XMLHttpRequestInterceptor()],
  belowFetch: false,
});
