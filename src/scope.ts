// Scopes: who owns a key, derived in this one place for calls and for forget() (docs/protocol.md, Terms).
import { sha256 } from "./fingerprint.ts";
import type { NormalizedOptions } from "./options.ts";
import { strictOptions } from "./strict.ts";

/** How a call's scope was found: it decides whether joiners and replays get `Set-Cookie`. */
export interface Scope {
  kind: "credential" | "custom" | "anonymous";
  /** What the store key holds for the scope: a SHA-256, or the literal `anonymous`. */
  hash: string;
}

/** Which stored key `forget` removes: the key's scope is derived as for a call. */
export interface ForgetOptions {
  /** The headers of the client that used the key (its credential headers), for the default scope. */
  headers?: Headers | Record<string, string> | [string, string][];
  /** The value the custom `scope` option returned for that client. */
  scope?: string;
  /** Also remove a live lease (its holder's commit then changes nothing). Default false. */
  force?: boolean;
}

const FORGET_OPTIONS = { headers: true, scope: true, force: true } satisfies Record<keyof ForgetOptions, true>;

type ScopeOptions = Pick<NormalizedOptions, "scope" | "credentialHeaders">;

const ANONYMOUS: Scope = { kind: "anonymous", hash: "anonymous" };

/**
 * The scope of a request: the custom `scope` option's value, else the first of `credentialHeaders` that has
 * a value (an empty or blank one is no credential), else anonymous. `request` is built only when needed.
 */
export async function scopeOf(
  o: ScopeOptions,
  header: (name: string) => string | null,
  request: () => Request,
): Promise<Scope> {
  if (o.scope) return { kind: "custom", hash: await sha256(`scope\n${await o.scope(request())}`) };
  for (const name of o.credentialHeaders) {
    const value = header(name);
    // The hash input is unchanged since the first version, so records stored then still match.
    if (value !== null && value.trim() !== "")
      return { kind: "credential", hash: await sha256(`credential\n${value}`) };
  }
  return ANONYMOUS;
}

/** The scope hash `forget(key, options)` removes under: the given custom scope, else the headers' as for a call. */
export async function forgetScope(o: ScopeOptions, options: ForgetOptions = {}): Promise<string> {
  strictOptions(options, FORGET_OPTIONS, "forget()");
  if (options.scope !== undefined) {
    if (typeof options.scope !== "string") throw new TypeError("idemfetch: forget() scope must be a string");
    return sha256(`scope\n${options.scope}`);
  }
  if (o.scope) throw new TypeError("idemfetch: forget() needs `scope`: this instance uses a custom scope option");
  const headers = new Headers(options.headers);
  const scope = await scopeOf(
    o,
    (name) => headers.get(name),
    () => new Request("http://forget.invalid"),
  );
  return scope.hash;
}
