// The engine's input and output as plain values: a call plan in, an answer from upstream, a reply per caller out.

/** A body the face has not read yet; the engine reads it only when the protocol needs it. */
export interface UnreadBody {
  /** The declared length in bytes, when the request declares a valid one. */
  readonly length: number | null;
  /**
   * Reads the body up to `limit` bytes. Resolves with every byte, or null when it stopped early: past the
   * limit, or (with `onlyObjects`) at a first byte that does not open a JSON object. Nothing is lost either
   * way: the face keeps what was read for `pass`.
   */
  read(limit: number, onlyObjects: boolean): Promise<Uint8Array | null>;
}

/** What the protocol reads of one request. Built by each face from its native request. */
export interface Plan {
  /** Upper-case method. */
  readonly method: string;
  /** The absolute URL. */
  readonly url: string;
  /** One request header by lower-case name (joined with ", " when repeated), or null. */
  header(name: string): string | null;
  /** The body: none, its bytes (in memory already), or a body to read on demand. */
  readonly body: Uint8Array | null | UnreadBody;
  /** The request as a Web Request with `body`, for the custom `scope` and `fingerprint` options only. */
  request(body: Uint8Array | null): Request;
  /**
   * True when the body's bytes are gone and what is left may have lost precision (a parsed body): the call
   * is then never the same request as another (a retry under its key conflicts, never replays).
   */
  incomparable?: boolean;
}

/** A body arriving from upstream (a Web stream reader fits): read once, in order. */
export interface Source {
  read(): Promise<ReadableStreamReadResult<Uint8Array>>;
  cancel(reason?: unknown): Promise<void> | void;
}

/** What upstream answered, as plain values. */
export interface Answer {
  status: number;
  statusText: string;
  /** Lower-case names, in order, repeated names as separate pairs. */
  headers: [string, string][];
  /** The body: none, whole (in memory), or arriving. */
  body: Uint8Array | null | Source;
  /** The final URL (client: after redirects), when it differs from the request's. */
  url?: string;
  /** The face's own object, for an answer no copy can be made of (an opaque response, status 0). */
  native?: unknown;
  /** False: never stored, whatever `shouldStore` says (an answer the face cannot vouch for: a hijacked reply). */
  storable?: boolean;
}

/** How the engine sends a call upstream once: the body it read, the abort of every caller, the key header to add. */
export interface Upstream {
  /** The body the engine read (null: none). */
  body: Uint8Array | null;
  /** Aborts once every caller aborted (client only). */
  signal: AbortSignal | undefined;
  /** A key found in the body or given per call, to send as the `Idempotency-Key` header (client only). */
  keyHeader: string | undefined;
  /** How many callers have attached to this answer so far (the leader's own caller and the joiners). */
  callers(): number;
}

/** A body handed live to one caller: pull chunks in order until null; cancel to stop reading. */
export interface Tap {
  pull(): Promise<Uint8Array | null>;
  /** Stops reading: the reader went away. */
  cancel(): void;
  /** Stops reading because the caller aborted: counts towards aborting the upstream call once every caller has. */
  abandon(): void;
}

/** What one caller gets. */
export type Reply =
  | {
      status: number;
      statusText: string;
      headers: [string, string][];
      /** Whole bytes (shared between callers: never write to them), a live body, or none. */
      body: Uint8Array | Tap | null;
      /** The answer's URL (client), if known. */
      url?: string;
      /** Whether this caller caused the answer (the leader): its headers are the route's own, unfiltered. */
      own: boolean;
    }
  /** The face's own object, as upstream gave it; `first` is false for every caller but the one that sent it. */
  | { native: unknown; first: boolean };

/** A call the protocol does not handle: the face sends it on untouched and answers what that gives. */
export interface Passed<P> {
  passed: P;
}
