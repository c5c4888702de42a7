// Strict options: an option name nobody knows is a TypeError naming the closest known one, on every factory.

/**
 * The option names of `T`, as a value the compiler holds to all of `T`'s keys and no others: a new
 * option in `T` fails to compile until it is added here too, so the strict check can never lag behind.
 */
export type OptionNames<T> = { readonly [K in keyof T]-?: true };

/**
 * Throws `TypeError` when `options` is neither undefined nor an object, or has an own key that is not
 * in `known`; the message names `where`, the unknown key and the closest known one ("did you mean").
 */
export function strictOptions(options: unknown, known: Readonly<Record<string, true>>, where: string): void {
  if (options === undefined) return;
  if (typeof options !== "object" || options === null || Array.isArray(options)) {
    throw new TypeError(`idemfetch: ${where} options must be an object, got ${show(options)}`);
  }
  for (const name of Object.keys(options)) {
    if (Object.hasOwn(known, name)) continue;
    const names = Object.keys(known);
    const closest = nearest(name, names);
    throw new TypeError(
      `idemfetch: ${where} has no option "${name}"; ${
        closest === undefined
          ? `its options are ${names.map((n) => `"${n}"`).join(", ")}`
          : `did you mean "${closest}"?`
      }`,
    );
  }
}

/** The known name a typo most likely meant: same letters in another case, a prefix either way, or a few edits. */
function nearest(name: string, names: readonly string[]): string | undefined {
  const lower = name.toLowerCase();
  let best: string | undefined;
  let bestScore = Number.POSITIVE_INFINITY;
  for (const candidate of names) {
    const c = candidate.toLowerCase();
    const score = c === lower ? 0 : c.startsWith(lower) || lower.startsWith(c) ? 1 : distance(lower, c) + 1;
    if (score < bestScore) {
      best = candidate;
      bestScore = score;
    }
  }
  // Beyond about a third of the word in edits, a suggestion is a guess that misleads more than it helps.
  return bestScore <= Math.max(2, Math.ceil(name.length / 3)) + 1 ? best : undefined;
}

/** Optimal string alignment distance: insertions, deletions, substitutions and swaps of neighbours. */
function distance(a: string, b: string): number {
  const rows: number[][] = [];
  for (let i = 0; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      if (i === 0) {
        row.push(j);
        continue;
      }
      const up = rows[i - 1] as number[];
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min((up[j] as number) + 1, (row[j - 1] as number) + 1, (up[j - 1] as number) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        d = Math.min(d, ((rows[i - 2] as number[])[j - 2] as number) + 1);
      }
      row.push(d);
    }
    rows.push(row);
  }
  return (rows[a.length] as number[])[b.length] as number;
}

function show(value: unknown): string {
  return typeof value === "string" ? JSON.stringify(value) : String(value);
}
