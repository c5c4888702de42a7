// workerd's built-in "cloudflare:workers" module, as far as the quick start uses it (what `wrangler types` generates).
declare module "cloudflare:workers" {
  export const env: { UPSTASH_REDIS_REST_URL: string; UPSTASH_REDIS_REST_TOKEN: string };
}
