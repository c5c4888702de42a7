// Child process: the counting upstream of test/fixtures on 127.0.0.1, away from the bench's own event loop.
import { startUpstream } from "../fixtures/upstream.ts";
import { serveHost } from "./lib.ts";

const upstream = await startUpstream();
serveHost(
  { url: upstream.url },
  {
    count: () => upstream.count(),
    reset: () => upstream.reset(),
    exit: () => upstream.close(),
  },
);
