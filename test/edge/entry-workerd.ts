// The Workers module the workerd test runs: export default { fetch }, with the runtime's env and ctx.
import { createApp, type EdgeEnv, type WaitUntil } from "./app.ts";

const app = createApp();

export default {
  fetch: (request: Request, env: EdgeEnv, ctx: WaitUntil): Promise<Response> => app(request, env, ctx),
};
