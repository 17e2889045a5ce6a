#!/usr/bin/env node
// Validate dashboards/*.json against Grafana's published dashboard schema.
//
//   node deploy/grafana/validate-dashboards.mjs <node-prefix> [dashboard.json ...]
//
// <node-prefix> is the directory whose node_modules holds @grafana/schema and
// typescript (scripts/check-deploy.sh installs them into tools/node).
//
// 1. Schema: each dashboard is compiled by tsc as
//      const dashboard = <the JSON> satisfies StrictDashboard;
//    (deploy/grafana/strict-dashboard.ts). Any key or value that Grafana's
//    types do not allow is a compile error.
// 2. Self-test: deliberately broken copies of the first dashboard (an old
//    "graph" panel, a misspelt key, an invalid enum value) are compiled in the
//    same run and MUST fail; otherwise the check itself is broken.
// 3. Conventions: schemaVersion >= 39, unique panel ids, the datasource is the
//    ${datasource} template variable everywhere, the filter variables exist
//    (label_values, multi, include All), every target has a PromQL expr.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const [prefixArg, ...files] = process.argv.slice(2);
if (!prefixArg) {
  console.error('usage: validate-dashboards.mjs <node-prefix> [dashboard.json ...]');
  process.exit(2);
}
const prefix = path.resolve(prefixArg);
const dashboards = files.length
  ? files.map((f) => path.resolve(f))
  : fs
      .readdirSync(path.join(root, 'dashboards'))
      .filter((f) => f.endsWith('.json'))
      .sort()
      .map((f) => path.join(root, 'dashboards', f));

const work = path.join(prefix, 'dashboard-check');
fs.rmSync(work, { recursive: true, force: true });
fs.mkdirSync(work, { recursive: true });
fs.copyFileSync(path.join(here, 'strict-dashboard.ts'), path.join(work, 'strict-dashboard.ts'));
fs.writeFileSync(
  path.join(work, 'tsconfig.json'),
  JSON.stringify(
    {
      compilerOptions: {
        strict: true,
        noEmit: true,
        target: 'es2022',
        module: 'esnext',
        moduleResolution: 'bundler',
        skipLibCheck: true,
        types: [],
      },
      include: ['*.ts'],
    },
    null,
    2,
  ),
);

const problems = [];
const tsFor = (name, obj) => {
  const file = `${name}.ts`;
  fs.writeFileSync(
    path.join(work, file),
    `import type { StrictDashboard } from './strict-dashboard';\n\n` +
      `const dashboard = ${JSON.stringify(obj, null, 2)} satisfies StrictDashboard;\n\n` +
      `export default dashboard;\n`,
  );
  return file;
};

// --- 1. schema (and 2. broken copies) -----------------------------------
const good = new Map(); // ts file -> dashboard path
const parsed = new Map();
for (const d of dashboards) {
  let obj;
  try {
    obj = JSON.parse(fs.readFileSync(d, 'utf8'));
  } catch (e) {
    problems.push(`${d}: not valid JSON: ${e.message}`);
    continue;
  }
  parsed.set(d, obj);
  good.set(tsFor(`dashboard_${path.basename(d, '.json').replace(/\W/g, '_')}`, obj), d);
}

const broken = new Map(); // ts file -> what was broken
const first = [...parsed.values()][0];
if (first) {
  const clone = () => JSON.parse(JSON.stringify(first));
  const firstPanel = (o) => o.panels.find((p) => p.type !== 'row');
  let b = clone();
  firstPanel(b).type = 'graph';
  broken.set(tsFor('broken_graph_panel', b), 'a panel of the removed type "graph"');
  b = clone();
  firstPanel(b).gridpos = firstPanel(b).gridPos;
  broken.set(tsFor('broken_unknown_key', b), 'a misspelt panel key "gridpos"');
  b = clone();
  firstPanel(b).fieldConfig.defaults.thresholds = { mode: 'absolut', steps: [] };
  broken.set(tsFor('broken_enum_value', b), 'thresholds.mode "absolut"');
  b = clone();
  b.templating.list[0].multi = 'yes';
  broken.set(tsFor('broken_variable_type', b), 'a variable with multi: "yes"');
}

const tsc = path.join(prefix, 'node_modules', 'typescript', 'bin', 'tsc');
let out = '';
try {
  out = execFileSync(process.execPath, [tsc, '-p', '.', '--pretty', 'false'], { cwd: work, encoding: 'utf8' });
} catch (e) {
  out = `${e.stdout || ''}${e.stderr || ''}`;
}
const errorsIn = (file) => out.split('\n').filter((l) => l.startsWith(`${file}(`));
const unattributed = out
  .split('\n')
  .filter((l) => l.trim() && ![...good.keys(), ...broken.keys()].some((f) => l.startsWith(`${f}(`)) && !l.startsWith(' '));
if (unattributed.length) problems.push(`tsc: unexpected output:\n${unattributed.join('\n')}`);
for (const [file, d] of good) {
  const errs = errorsIn(file);
  if (errs.length) {
    problems.push(`${path.relative(root, d)}: does not match Grafana's dashboard schema:\n  ${errs.join('\n  ')}`);
  } else {
    console.log(`ok   schema       ${path.relative(root, d)}`);
  }
}
for (const [file, what] of broken) {
  if (errorsIn(file).length === 0) {
    problems.push(`self-test: a dashboard with ${what} was accepted; the schema check is not working`);
  } else {
    console.log(`ok   self-test    rejected ${what}`);
  }
}

// --- 3. conventions -------------------------------------------------------
const ALLOWED = new Set(['timeseries', 'stat', 'table', 'state-timeline', 'row']);
const FILTERS = ['cloud_service', 'cloud_region', 'project_id', 'job_type'];
for (const [d, o] of parsed) {
  const rel = path.relative(root, d);
  const before = problems.length;
  const bad = (msg) => problems.push(`${rel}: ${msg}`);
  if (!(o.schemaVersion >= 39)) bad(`schemaVersion ${o.schemaVersion} < 39`);
  const vars = new Map((o.templating?.list ?? []).map((v) => [v.name, v]));
  const ds = vars.get('datasource');
  if (!ds || ds.type !== 'datasource' || ds.query !== 'prometheus') bad('no datasource variable of type prometheus');
  for (const name of FILTERS) {
    const v = vars.get(name);
    if (!v) {
      bad(`no template variable ${name}`);
      continue;
    }
    if (v.type !== 'query' || !v.multi || !v.includeAll) bad(`variable ${name} must be a multi-value query with All`);
    const q = typeof v.query === 'string' ? v.query : v.query?.query;
    if (!/^label_values\(.*\b/.test(q ?? '') || !q.includes(name)) bad(`variable ${name}: query is not label_values(..., ${name})`);
    if (v.datasource?.uid !== '${datasource}') bad(`variable ${name} does not use \${datasource}`);
  }
  const ids = new Set();
  for (const p of o.panels ?? []) {
    const where = `panel ${p.id} "${p.title}"`;
    if (!ALLOWED.has(p.type)) bad(`${where}: panel type ${p.type} is not allowed`);
    if (ids.has(p.id)) bad(`${where}: duplicate panel id`);
    ids.add(p.id);
    if (!p.gridPos) bad(`${where}: no gridPos`);
    if (p.type === 'row') continue;
    if (p.datasource?.uid !== '${datasource}' || p.datasource?.type !== 'prometheus') bad(`${where}: datasource is not \${datasource}`);
    if (!p.targets?.length) bad(`${where}: no targets`);
    for (const t of p.targets ?? []) {
      if (!t.expr?.trim()) bad(`${where}: target ${t.refId} has no expr`);
      if (t.datasource && t.datasource.uid !== '${datasource}') bad(`${where}: target ${t.refId} datasource is not \${datasource}`);
    }
  }
  if (problems.length === before) console.log(`ok   conventions  ${rel}`);
}

if (problems.length) {
  console.error(`\n${problems.length} problem(s):\n- ${problems.join('\n- ')}`);
  process.exit(1);
}
console.log(`dashboards valid: ${parsed.size} checked, ${broken.size} broken copies rejected`);
