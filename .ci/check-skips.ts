// After `npm test`: fails on any skipped or to-do test not on the allow-list (vitest, browser, Deno reports), and on a test that returns early.
// A test whose environment is missing must fail loudly, never pass green: CI sets the environment up (.ci/ensure-services.sh).
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";

/** Reports written by `npm test` (package.json). */
const OUT = ".ci/out";
const VITEST_REPORTS = [`${OUT}/vitest.json`, `${OUT}/browser.json`];
const DENO_REPORT = `${OUT}/deno.xml`;

/**
 * Skips that are the test's own statement, by full name (a substring), each with why it may skip. Keep it short:
 * an entry here is a test CI does not run.
 */
const ALLOWED: readonly { name: string; why: string }[] = [
  // test/adapters/redis-cases.ts: a Redis adapter without subscribe (Upstash REST) has no wake-up to test.
  { name: "forget wakes subscribers", why: "the adapter has no subscribe (Upstash REST polls)" },
  // src/testing.ts: conformance subscribe cases for a store without subscribe, once they skip visibly (issue 16.3).
  { name: "subscribe", why: "conformance cases for stores without subscribe (polling stores)" },
  // src/testing.ts: the live-stream section (issue 17) for stores that do not declare the optional capability; the
  // suite checks those stores have none of its methods.
  { name: "live stream: ", why: "the live-stream conformance section, for stores without the optional capability" },
];

const problems: string[] = [];
const allowed = (name: string): boolean => ALLOWED.some((a) => name.includes(a.name));

interface VitestReport {
  testResults: { name: string; assertionResults: { fullName: string; status: string }[] }[];
}
for (const path of VITEST_REPORTS) {
  if (!existsSync(path)) {
    problems.push(`${path} is missing: run the tests through \`npm test\``);
    continue;
  }
  const report = JSON.parse(readFileSync(path, "utf8")) as VitestReport;
  for (const file of report.testResults) {
    for (const t of file.assertionResults) {
      if (["skipped", "pending", "todo", "disabled"].includes(t.status) && !allowed(t.fullName)) {
        problems.push(`${t.status}: ${file.name.replace(`${process.cwd()}/`, "")} > ${t.fullName}`);
      }
    }
  }
}

if (!existsSync(DENO_REPORT)) problems.push(`${DENO_REPORT} is missing: run the tests through \`npm test\``);
else {
  // Deno's JUnit report: an ignored test is a <testcase> holding <skipped/>.
  const xml = readFileSync(DENO_REPORT, "utf8");
  for (const m of xml.matchAll(/<testcase name="([^"]*)"[^>]*>(?:(?!<\/testcase>)[\s\S])*<skipped/g)) {
    if (!allowed(m[1] as string)) problems.push(`ignored (Deno): ${m[1]}`);
  }
}

// A test that returns early looks green to every reporter: the idiom is a "skip" message and a bare `return`.
// Such a test must throw (a missing service is a failure) or call the runner's skip, which the reports see.
const earlyReturn = /console\.(?:log|warn|info)\([^)]*\bskip[^)]*\);?\s*\n\s*return\b/i;
const walk = (dir: string): string[] =>
  readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return name === "node_modules" ? [] : walk(path);
    return /\.(ts|mts|js)$/.test(name) ? [path] : [];
  });
for (const file of walk("test")) {
  const text = readFileSync(file, "utf8");
  const m = earlyReturn.exec(text);
  if (m) {
    const line = text.slice(0, m.index).split("\n").length;
    problems.push(`returns early after a skip message: ${file}:${line}`);
  }
}

if (problems.length > 0) {
  console.error(`check-skips: ${problems.length} test(s) did not run or returned early:\n  ${problems.join("\n  ")}`);
  console.error("Fix the environment (.ci/ensure-services.sh) or the test; a deliberate skip goes on ALLOWED with its reason.");
  process.exit(1);
}
console.log("check-skips: no test skipped (beyond the allow-list) or returned early");
