// Runs a test file against another version of one peer: IDEMFETCH_PEER="ioredis=/dir/node_modules/ioredis-lowest"
// sends every import of `ioredis` (and `ioredis/...`) from the sources and tests to that copy (see .ci/peers.sh).
import { dirname } from "node:path";
import { defineConfig, type Plugin } from "vitest/config";
import base from "../vitest.config.ts";

const [name, dir] = (process.env.IDEMFETCH_PEER ?? "").split("=");
if (!name || !dir) throw new Error('IDEMFETCH_PEER="<package>=<folder of the installed copy>" is required');
const alias = dir.slice(dir.lastIndexOf("node_modules/") + "node_modules/".length);
// A file beside the copy's node_modules: resolving the alias from there finds the copy and reads its exports.
const importer = `${dirname(dirname(dir))}/resolve-from.js`;

const redirect: Plugin = {
  name: "idemfetch-peer",
  enforce: "pre",
  resolveId(source) {
    if (source !== name && !source.startsWith(`${name}/`)) return null;
    return this.resolve(alias + source.slice(name.length), importer, { skipSelf: true });
  },
};

export default defineConfig({ ...base, plugins: [redirect] });
