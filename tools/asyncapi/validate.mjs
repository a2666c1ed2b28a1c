// Validate AsyncAPI documents with the reference parser (@asyncapi/parser, the one the AsyncAPI
// CLI and Studio use): schema of the spec, every $ref, and its semantic rules.
// Usage: node validate.mjs FILE...   Exit 0 when every file has no error-level diagnostic.
import { readFile } from "node:fs/promises";
import { Parser } from "@asyncapi/parser";

const SEVERITY = ["error", "warning", "info", "hint"];
const parser = new Parser();
let failed = false;
for (const file of process.argv.slice(2)) {
  const text = await readFile(file, "utf8");
  const { document, diagnostics } = await parser.parse(text, { source: file });
  for (const d of diagnostics) {
    const where = d.path.length ? d.path.join(".") : "(document)";
    console.log(`${file}: ${SEVERITY[d.severity] ?? d.severity}: ${d.code}: ${where}: ${d.message}`);
  }
  const errors = diagnostics.filter((d) => d.severity === 0).length;
  if (document === undefined || errors > 0) {
    failed = true;
    console.log(`${file}: INVALID (${errors} errors)`);
  } else {
    const ops = document.operations().all().map((op) => `${op.id()}=${op.action()}`);
    console.log(`${file}: valid AsyncAPI ${document.version()}; operations ${ops.join(" ")}`);
  }
}
if (process.argv.length < 3) {
  console.error("usage: node validate.mjs FILE...");
  failed = true;
}
process.exit(failed ? 1 : 0);
