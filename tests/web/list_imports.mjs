// Lists the module specifiers each TypeScript source imports, with TypeScript's own scanner
// (static `import ... from`, `import "..."`, `export ... from`, dynamic `import("...")`;
// comments and strings are not mistaken for imports). tests/test_layout_web.py uses it.
// stdin: {"path": "source text", ...}   stdout: {"path": ["specifier", ...], ...}
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";

// tests/ has no node_modules of its own: the compiler is web/'s.
const require = createRequire(new URL("../../web/package.json", import.meta.url));
const ts = require("typescript");

const sources = JSON.parse(readFileSync(0, "utf8"));
const imports = {};
for (const [file, text] of Object.entries(sources)) {
  imports[file] = ts.preProcessFile(text, true, true).importedFiles.map((ref) => ref.fileName);
}
process.stdout.write(JSON.stringify(imports));
