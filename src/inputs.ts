// A call's protocol inputs, resolved before any store call: its key, the body bytes, the fingerprint and the scope.

import { now } from "./acquire.ts";
import { isJsonType } from "./body.ts";
import type { Call, Face } from "./engine.ts";
import { fingerprintOf, parseJsonBody, sha256 } from "./fingerprint.ts";
import { explicitKey, KEY_HEADER, keyFromJson, validateKey } from "./key.ts";
import type { NormalizedOptions } from "./options.ts";
import { type ForgetOptions, forgetScope, type Scope, scopeOf } from "./scope.ts";
import { type ForgetResult, newToken } from "./store.ts";

/** One keyed call's protocol inputs. */
export interface Keyed {
  key: string;
  auto: boolean;
  bytes: Uint8Array | null;
  fingerprint: string;
  keyHash: string;
  scope: Scope;
  target: string;
  /** When the call entered the protocol (for event durations). */
  started: number;
}

/** The call's key, body and hashes; "pass" when it carries no key, "too-large" when a keyed body cannot be read. */
export async function keyOf<P>(o: NormalizedOptions, face: Face, call: Call<P>): Promise<Keyed | "pass" | "too-large"> {
  const { plan } = call;
  const headerValue = plan.header(KEY_HEADER);
  const explicit = explicitKey(call.key, headerValue);
  const autoEligible = face.autoKey !== false && face.autoKey.methods.has(plan.method) && !call.streamedBody;
  const bytes = await bodyOf(o, face, call, explicit, autoEligible);
  if (bytes === "pass" || bytes === "too-large") return bytes;
  const json = parseJsonBody(bytes);
  const key = explicit ?? keyFromJson(json);
  if (key === undefined && !autoEligible) return "pass";

  const started = now();
  const target = face.target(plan.url);
  /** The request as the `fingerprint` and `scope` options see it: its parts and the body the engine read. */
  const request = (): Request => plan.request(bytes);
  const [fingerprint, keyHash, scope] = await Promise.all([
    plan.incomparable
      ? `incomparable:${newToken()}`
      : o.fingerprint
        ? o.fingerprint(request())
        : fingerprintOf(plan.method, target, bytes, json, plan.header("content-type")),
    key === undefined ? undefined : sha256(key),
    scopeOf(o, plan.header, request),
  ]);
  const auto = key === undefined;
  return {
    key: key ?? fingerprint,
    auto,
    bytes,
    fingerprint,
    keyHash: keyHash ?? fingerprint,
    scope,
    target,
    started,
  };
}

/** Reads what the protocol needs of a body: its bytes, or "pass" to send it on untouched. */
async function bodyOf<P>(
  o: NormalizedOptions,
  face: Face,
  call: Call<P>,
  explicit: string | undefined,
  autoEligible: boolean,
): Promise<Uint8Array | null | "pass" | "too-large"> {
  const { body } = call.plan;
  const length = body === null ? 0 : body instanceof Uint8Array ? body.length : body.length;
  if (explicit === undefined && (call.streamedBody || (length === 0 && !autoEligible))) return "pass";
  if (body === null || length === 0) return null;
  // A keyless body that is not a JSON object cannot hold a key: once its first bytes show it, it goes
  // on as it came, so a server never holds back an upload it does not own.
  const sniff =
    explicit === undefined && face.keylessBodies === "sniff" && !isJsonType(call.plan.header("content-type"));
  const bytes = body instanceof Uint8Array ? body : await body.read(o.maxBodyBytes, sniff);
  if (bytes !== null && bytes.length <= o.maxBodyBytes) return bytes;
  return explicit === undefined ? "pass" : "too-large";
}

/** Removes a stored key (hashed and scoped as for a call) so it runs again; a live lease is refused unless forced. */
export async function forgetKey(o: NormalizedOptions, key: string, options: ForgetOptions): Promise<ForgetResult> {
  validateKey(key, "forget(key)");
  const scope = await forgetScope(o, options);
  const storeKey = `${o.namespace}:${scope}:${await sha256(key)}`;
  return o.store.forget(storeKey, options.force === true);
}

/** How many identical-call inputs an engine remembers (`sameAs` → key, fingerprint, scope). */
const KNOWN_CALLS = 1024;

/**
 * A call's inputs, remembered by `sameAs` (what makes two client calls one request): a later identical
 * call (a replay, the next burst) skips the body parse, canonicalisation and hashing. The oldest goes first.
 */
export class KnownInputs {
  private readonly known = new Map<string, Omit<Keyed, "bytes" | "started">>();

  constructor(
    private readonly o: NormalizedOptions,
    private readonly face: Face,
  ) {}

  async of<P>(call: Call<P>, sameAs: string | undefined): ReturnType<typeof keyOf> {
    const hit = sameAs === undefined ? undefined : this.known.get(sameAs);
    if (hit) {
      const { body } = call.plan;
      return { ...hit, bytes: body instanceof Uint8Array ? body : null, started: now() };
    }
    const keyed = await keyOf(this.o, this.face, call);
    if (sameAs !== undefined && typeof keyed === "object") {
      if (this.known.size >= KNOWN_CALLS) this.known.delete(this.known.keys().next().value as string);
      const { bytes: _bytes, started: _started, ...inputs } = keyed;
      this.known.set(sameAs, inputs);
    }
    return keyed;
  }
}
